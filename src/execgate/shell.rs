//! The shell subset the exec gate accepts: simple commands joined by `&&`, `||`,
//! `;`, `|` and newlines, with quoting, escapes and comments. Everything else a POSIX shell
//! would do — substitutions, redirections, subshells, groups, functions, loops, conditionals,
//! background jobs, assignments — is refused, naming the construct. The grammar is small on
//! purpose: accepting only what it fully understands is what makes the gate sound.

/// A word after quote removal, and whether the shell would still expand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// Contains an unquoted or double-quoted `$…`, or an unquoted glob character: its value is
    /// only known at run time.
    pub dynamic: bool,
    /// Starts with an unquoted `~` (home-relative, known statically).
    pub tilde: bool,
    /// Contains an unquoted brace expansion (`{a,b}`, `{1..3}`): bash would make several
    /// words of it.
    pub brace: bool,
}

/// How a command is joined to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The first command, or after `;` or a newline: it runs whatever came before.
    Seq,
    /// After `&&`: it runs only if the one before succeeded.
    And,
    /// After `||`: it runs only if the one before failed.
    Or,
    /// After `|`: it runs in the same pipeline, in a subshell of its own.
    Pipe,
}

/// One simple command of a chain, as written (for messages) and as words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub source: String,
    pub words: Vec<Word>,
    pub joined: Joined,
    /// Followed by `|`: it runs in a subshell of its own.
    pub piped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{construct}")]
pub struct Refusal {
    /// The construct, named as an operator would look it up: `command substitution`, …
    pub construct: String,
    /// The text where it was found.
    pub at: String,
}

fn refuse(construct: &str, at: &str) -> Refusal {
    Refusal {
        construct: construct.into(),
        at: at.trim().into(),
    }
}

const KEYWORDS: &[(&str, &str)] = &[
    ("if", "conditional (if)"),
    ("then", "conditional (if)"),
    ("elif", "conditional (if)"),
    ("else", "conditional (if)"),
    ("fi", "conditional (if)"),
    ("case", "case statement"),
    ("esac", "case statement"),
    ("for", "loop (for)"),
    ("select", "loop (select)"),
    ("while", "loop (while)"),
    ("until", "loop (until)"),
    ("do", "loop"),
    ("done", "loop"),
    ("function", "function definition"),
    ("{", "command group"),
    ("}", "command group"),
    ("!", "pipeline negation"),
    ("[[", "conditional expression ([[)"),
    ("]]", "conditional expression ([[)"),
    ("coproc", "coprocess"),
    ("time", "time keyword"),
];

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    src: &'a str,
}

/// Characters after which a `#` starts a comment (it begins a word).
fn ends_word(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>'
    )
}

/// The script with its line continuations (an unquoted or double-quoted backslash-newline)
/// removed, as every shell does before it reads operators, keywords and `$`: otherwise
/// `$\<newline>(…)` would look like a literal `$` here and be a command substitution to the
/// shell. Single quotes and comments keep theirs (a comment ends at the newline even after a
/// backslash).
fn join_continuations(script: &str) -> String {
    #[derive(PartialEq)]
    enum State {
        Plain,
        Single,
        Double,
        Comment,
    }
    let chars: Vec<char> = script.chars().collect();
    let mut out = String::with_capacity(script.len());
    let mut state = State::Plain;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match state {
            State::Plain | State::Double if c == '\\' => {
                if next != Some('\n') {
                    out.push(c);
                    out.extend(next);
                }
                i += 2;
                continue;
            }
            State::Plain => match c {
                '\'' => state = State::Single,
                '"' => state = State::Double,
                '#' if out.chars().last().is_none_or(ends_word) => state = State::Comment,
                _ => {}
            },
            State::Single if c == '\'' => state = State::Plain,
            State::Double if c == '"' => state = State::Plain,
            State::Comment if c == '\n' => state = State::Plain,
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Parse `script` into its simple commands, or the first construct it refuses.
pub fn parse(script: &str) -> Result<Vec<Command>, Refusal> {
    let joined = join_continuations(script);
    let script = joined.as_str();
    let mut lx = Lexer {
        chars: script.chars().collect(),
        pos: 0,
        src: script,
    };
    let mut commands = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut start = 0usize;
    let mut after_operator = false;
    let mut joined = Joined::Seq;
    loop {
        lx.skip_blanks();
        let Some(c) = lx.peek() else { break };
        match c {
            '#' => lx.skip_comment(),
            '\n' | ';' | '&' | '|' => {
                let op_start = lx.pos;
                let op = lx.operator()?;
                let text: String = lx.chars[start..op_start].iter().collect();
                if words.is_empty() {
                    // Blank lines are fine; an empty command before an operator is not.
                    if op != "\n" {
                        return Err(refuse("syntax error (empty command)", op));
                    }
                    start = lx.pos;
                    continue;
                }
                commands.push(Command {
                    source: text.trim().to_string(),
                    words: std::mem::take(&mut words),
                    joined,
                    piped: op == "|",
                });
                joined = match op {
                    "&&" => Joined::And,
                    "||" => Joined::Or,
                    "|" => Joined::Pipe,
                    _ => Joined::Seq,
                };
                start = lx.pos;
                after_operator = op != "\n" && op != ";";
            }
            '(' | ')' => {
                if words.len() == 1 && c == '(' && lx.peek_at(1) == Some(')') {
                    return Err(refuse("function definition", lx.src));
                }
                return Err(refuse("subshell", lx.src));
            }
            '<' | '>' => {
                if lx.peek_at(1) == Some('(') {
                    return Err(refuse("process substitution", lx.src));
                }
                if c == '<' && lx.peek_at(1) == Some('<') {
                    return Err(refuse("heredoc", lx.src));
                }
                return Err(refuse("redirection", lx.src));
            }
            _ => {
                let w = lx.word()?;
                if words.is_empty() && !w.dynamic {
                    if let Some((_, name)) = KEYWORDS.iter().find(|(k, _)| *k == w.text) {
                        return Err(refuse(name, lx.src));
                    }
                }
                // A digit-only word directly followed by `<`/`>` is a redirection (`2>x`).
                if matches!(lx.peek(), Some('<') | Some('>')) {
                    return Err(refuse("redirection", lx.src));
                }
                if lx.peek() == Some('(') {
                    if lx.peek_at(1) == Some(')') {
                        return Err(refuse("function definition", lx.src));
                    }
                    return Err(refuse("subshell", lx.src));
                }
                words.push(w);
            }
        }
    }
    if words.is_empty() {
        if after_operator {
            return Err(refuse("syntax error (chain ends in an operator)", lx.src));
        }
    } else {
        let text: String = lx.chars[start..].iter().collect();
        commands.push(Command {
            source: text.trim().to_string(),
            words,
            joined,
            piped: false,
        });
    }
    Ok(commands)
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn skip_blanks(&mut self) {
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' {
                self.pos += 1;
            } else if c == '\\' && self.peek_at(1) == Some('\n') {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                break;
            }
            self.pos += 1;
        }
    }

    /// `&&`, `||`, `;`, `|`, newline; refuses `&`, `;;`, `|&`.
    fn operator(&mut self) -> Result<&'static str, Refusal> {
        let c = self.peek().expect("caller peeked");
        let next = self.peek_at(1);
        let (op, len) = match (c, next) {
            ('&', Some('&')) => ("&&", 2),
            ('|', Some('|')) => ("||", 2),
            ('|', Some('&')) => return Err(refuse("redirection (|&)", self.src)),
            ('|', _) => ("|", 1),
            (';', Some(';')) => return Err(refuse("case statement (;;)", self.src)),
            (';', _) => (";", 1),
            ('\n', _) => ("\n", 1),
            ('&', _) => return Err(refuse("background job (&)", self.src)),
            _ => unreachable!("operator() called on {c:?}"),
        };
        self.pos += len;
        Ok(op)
    }

    /// One word up to an unquoted blank or operator character.
    fn word(&mut self) -> Result<Word, Refusal> {
        let mut text = String::new();
        let mut dynamic = false;
        let tilde = self.peek() == Some('~');
        // Unquoted `{`, then `,` or `..`, then `}`: a brace expansion.
        let (mut open, mut sep, mut brace) = (false, false, false);
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => break,
                '\\' => {
                    match self.peek_at(1) {
                        Some('\n') => {}
                        Some(n) => text.push(n),
                        None => return Err(refuse("syntax error (trailing backslash)", self.src)),
                    }
                    self.pos += 2;
                }
                '\'' => {
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            None => {
                                return Err(refuse("syntax error (unterminated quote)", self.src))
                            }
                            Some('\'') => {
                                self.pos += 1;
                                break;
                            }
                            Some(ch) => {
                                text.push(ch);
                                self.pos += 1;
                            }
                        }
                    }
                }
                '"' => {
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            None => {
                                return Err(refuse("syntax error (unterminated quote)", self.src))
                            }
                            Some('"') => {
                                self.pos += 1;
                                break;
                            }
                            Some('\\') => {
                                match self.peek_at(1) {
                                    Some(n @ ('$' | '`' | '"' | '\\')) => text.push(n),
                                    Some('\n') => {}
                                    Some(n) => {
                                        text.push('\\');
                                        text.push(n);
                                    }
                                    None => {
                                        return Err(refuse(
                                            "syntax error (unterminated quote)",
                                            self.src,
                                        ))
                                    }
                                }
                                self.pos += 2;
                            }
                            Some('`') => return Err(refuse("command substitution", self.src)),
                            Some('$') => {
                                self.dollar()?;
                                dynamic = true;
                                text.push('$');
                                self.pos += 1;
                            }
                            Some(ch) => {
                                text.push(ch);
                                self.pos += 1;
                            }
                        }
                    }
                }
                '`' => return Err(refuse("command substitution", self.src)),
                '$' => {
                    self.dollar()?;
                    dynamic = true;
                    text.push('$');
                    self.pos += 1;
                }
                '*' | '?' | '[' => {
                    // `[` alone is the test builtin; inside a word it is a glob class.
                    let lone_bracket = c == '['
                        && text.is_empty()
                        && matches!(
                            self.peek_at(1),
                            None | Some(' ' | '\t' | '\n' | ';' | '&' | '|')
                        );
                    if !lone_bracket {
                        dynamic = true;
                    }
                    text.push(c);
                    self.pos += 1;
                }
                '{' | '}' | ',' | '.' => {
                    match c {
                        '{' => open = true,
                        ',' if open => sep = true,
                        '.' if open && self.peek_at(1) == Some('.') => sep = true,
                        '}' if open && sep => brace = true,
                        _ => {}
                    }
                    text.push(c);
                    self.pos += 1;
                }
                _ => {
                    text.push(c);
                    self.pos += 1;
                }
            }
        }
        Ok(Word {
            text,
            dynamic: dynamic || brace,
            tilde,
            brace,
        })
    }

    /// At a `$`: only a plain parameter (`$NAME`, `$1`, `$@`, `${NAME}`) is dynamic;
    /// everything that can evaluate code or quote differently is refused: command and
    /// arithmetic substitution (`$(…)`, `$((…))`, bash's `$[…]`), the operators of `${…}`
    /// (`${X@P}` runs prompt expansion, `${X:$Y}` arithmetic), `$'…'` and `$"…"` quoting.
    fn dollar(&self) -> Result<(), Refusal> {
        let name_start = |c: char| c.is_ascii_alphabetic() || c == '_';
        let special = |c: char| c.is_ascii_digit() || "@*#?$!-".contains(c);
        match self.peek_at(1) {
            Some('(') if self.peek_at(2) == Some('(') => {
                Err(refuse("arithmetic expansion", self.src))
            }
            Some('(') => Err(refuse("command substitution", self.src)),
            Some('[') => Err(refuse("arithmetic expansion ($[…])", self.src)),
            Some('\'') => Err(refuse("ANSI-C quoting ($'…')", self.src)),
            Some('"') => Err(refuse("locale quoting ($\"…\")", self.src)),
            Some('{') => {
                let rest: String = self.chars[self.pos + 2..]
                    .iter()
                    .take_while(|c| **c != '}')
                    .collect();
                let closed = self.chars.len() > self.pos + 2 + rest.chars().count();
                let mut it = rest.chars();
                let plain = match it.next() {
                    Some(c) if name_start(c) => it.all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    Some(c) if special(c) => it.next().is_none(),
                    _ => false,
                };
                if closed && plain {
                    Ok(())
                } else {
                    Err(refuse("parameter expansion operator (${…})", self.src))
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(script: &str) -> Vec<Vec<String>> {
        parse(script)
            .unwrap()
            .into_iter()
            .map(|c| c.words.into_iter().map(|w| w.text).collect())
            .collect()
    }

    fn refused(script: &str) -> String {
        parse(script).unwrap_err().construct
    }

    #[test]
    fn chains_quotes_escapes_comments() {
        assert_eq!(
            words("cd /tmp && git status"),
            [vec!["cd", "/tmp"], vec!["git", "status"]]
        );
        assert_eq!(
            words("a || b; c | d\ne"),
            [vec!["a"], vec!["b"], vec!["c"], vec!["d"], vec!["e"]]
        );
        assert_eq!(
            words("git commit -m 'a && b; c'"),
            [vec!["git", "commit", "-m", "a && b; c"]]
        );
        assert_eq!(words("echo \"x y\" z\\ w"), [vec!["echo", "x y", "z w"]]);
        assert_eq!(words("git status # && curl evil"), [vec!["git", "status"]]);
        assert_eq!(words("git \\\n status"), [vec!["git", "status"]]);
        assert_eq!(words("echo a\\&\\&b"), [vec!["echo", "a&&b"]]);
        assert_eq!(
            words("[ -d /tmp ] && git status"),
            [vec!["[", "-d", "/tmp", "]"], vec!["git", "status"]]
        );
        assert_eq!(words("echo '$(not run)'"), [vec!["echo", "$(not run)"]]);
        assert_eq!(words(""), Vec::<Vec<String>>::new());
        assert_eq!(words("\n\ngit status\n"), [vec!["git", "status"]]);
    }

    #[test]
    fn dynamic_words_are_marked() {
        let c = parse("cd $HOME && ./x \"$Y\" *.txt ~/a").unwrap();
        assert!(c[0].words[1].dynamic);
        assert!(c[1].words[1].dynamic && c[1].words[2].dynamic);
        assert!(c[1].words[3].tilde && !c[1].words[3].dynamic);
        assert!(!parse("[ x ]").unwrap()[0].words[0].dynamic);
    }

    #[test]
    fn connectors_and_braces_are_recorded() {
        let c = parse("a && b || c; d | e").unwrap();
        let j: Vec<(Joined, bool)> = c.iter().map(|c| (c.joined, c.piped)).collect();
        assert_eq!(
            j,
            [
                (Joined::Seq, false),
                (Joined::And, false),
                (Joined::Or, false),
                (Joined::Seq, true),
                (Joined::Pipe, false)
            ]
        );
        let w = |s: &str| parse(s).unwrap()[0].words.last().unwrap().clone();
        assert!(w("x {a,b}").brace && w("x a{1..3}").brace);
        assert!(!w("find . -exec x {}").brace && !w("x '{a,b}'").brace && !w("x a.b").brace);
    }

    #[test]
    fn refused_constructs_are_named() {
        for (script, construct) in [
            ("echo \"$(whoami)\"", "command substitution"),
            ("echo `id`", "command substitution"),
            ("echo $((1+2))", "arithmetic expansion"),
            ("diff <(ls) x", "process substitution"),
            ("git status > /tmp/x", "redirection"),
            ("git status 2>/dev/null", "redirection"),
            ("cat <<EOF\nx\nEOF", "heredoc"),
            ("(git status)", "subshell"),
            ("f() { git; }", "function definition"),
            ("function f { git; }", "function definition"),
            ("for i in 1; do git; done", "loop (for)"),
            ("while true; do git; done", "loop (while)"),
            ("if true; then git; fi", "conditional (if)"),
            ("{ git status; }", "command group"),
            ("git status &", "background job (&)"),
            ("git status |& cat", "redirection (|&)"),
            ("git &&", "syntax error (chain ends in an operator)"),
            ("&& git", "syntax error (empty command)"),
            ("git 'x", "syntax error (unterminated quote)"),
            ("! git status", "pipeline negation"),
            // A line continuation hides nothing: the shell joins the lines first.
            (": \"$\\\n(id)\"", "command substitution"),
            (": $\\\n(id)", "command substitution"),
            ("i\\\nf true; then x; fi", "conditional (if)"),
            ("echo $[a[1]]", "arithmetic expansion ($[…])"),
            ("git $'\\' x'\ncurl evil\n'", "ANSI-C quoting ($'…')"),
            ("git $\"x\"", "locale quoting ($\"…\")"),
            ("echo \"${X@P}\"", "parameter expansion operator (${…})"),
            ("echo \"${HOME:$Y}\"", "parameter expansion operator (${…})"),
            ("echo ${a[$(id)]}", "parameter expansion operator (${…})"),
            ("echo ${X", "parameter expansion operator (${…})"),
        ] {
            assert_eq!(refused(script), construct, "{script}");
        }
    }

    #[test]
    fn continuations_are_joined_as_the_shell_does() {
        assert_eq!(words("gi\\\nt status"), [vec!["git", "status"]]);
        assert_eq!(words("echo \"a\\\nb\""), [vec!["echo", "ab"]]);
        // Not in single quotes, not in comments: the comment ends at the newline.
        assert_eq!(words("echo 'a\\\nb'"), [vec!["echo", "a\\\nb"]]);
        assert_eq!(
            words("git status # \\\ncurl evil"),
            [vec!["git", "status"], vec!["curl", "evil"]]
        );
        assert_eq!(words("a\\\n#b"), [vec!["a#b"]]);
        assert_eq!(parse("git &\\\n& x").unwrap()[1].joined, Joined::And);
        assert_eq!(words("echo \\\\\ncurl"), [vec!["echo", "\\"], vec!["curl"]]);
        let c = parse("echo $HOME ${HOME} $1 ${1} $@ \"$X\" ${_a1}").unwrap();
        assert!(c[0].words[1..].iter().all(|w| w.dynamic));
    }
}
