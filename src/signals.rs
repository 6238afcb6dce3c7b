//! Signal names and numbers as `runc kill` accepts them, real-time signals included.

use nix::sys::signal::Signal;

/// The lowest and highest real-time signal numbers this C library leaves to programs.
pub fn rt_range() -> (i32, i32) {
    (libc::SIGRTMIN(), libc::SIGRTMAX())
}

/// Parse `TERM`, `SIGTERM`, `term`, `15`, and the real-time `RTMIN`, `RTMIN+3`, `SIGRTMAX-1`
/// or `37`, to a signal number.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let err = || format!("invalid signal: {s:?}");
    let (rtmin, rtmax) = rt_range();
    if let Ok(n) = s.parse::<i32>() {
        return match Signal::try_from(n) {
            Ok(sig) => Ok(sig as i32),
            Err(_) if (rtmin..=rtmax).contains(&n) => Ok(n),
            Err(_) => Err(err()),
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let offset = |rest: &str, sign: i32| -> Result<i32, String> {
        if rest.is_empty() {
            return Ok(0);
        }
        let digits = match sign {
            1 => rest.strip_prefix('+'),
            _ => rest.strip_prefix('-'),
        };
        digits
            .and_then(|d| d.parse::<i32>().ok())
            .map(|d| d * sign)
            .ok_or_else(err)
    };
    let rt = if let Some(rest) = name.strip_prefix("RTMIN") {
        Some(rtmin + offset(rest, 1)?)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        Some(rtmax + offset(rest, -1)?)
    } else {
        None
    };
    match rt {
        Some(n) if (rtmin..=rtmax).contains(&n) => Ok(n),
        Some(_) => Err(err()),
        None => format!("SIG{name}")
            .parse::<Signal>()
            .map(|sig| sig as i32)
            .map_err(|_| err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("9").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("hup").unwrap(), libc::SIGHUP);
        for bad in ["0x", "99", "SIGNOPE", "", "-1", "0"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn real_time_signals_by_number_and_name() {
        let (min, max) = rt_range();
        assert_eq!(parse_signal("RTMIN").unwrap(), min);
        assert_eq!(parse_signal("SIGRTMIN+3").unwrap(), min + 3);
        assert_eq!(parse_signal("rtmax-1").unwrap(), max - 1);
        assert_eq!(parse_signal(&(min + 3).to_string()).unwrap(), min + 3);
        assert_eq!(parse_signal(&max.to_string()).unwrap(), max);
        for bad in [
            "RTMIN-1",
            "RTMAX+1",
            "RTMIN+",
            "RTMIN3",
            &(max + 1).to_string(),
        ] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}
