#!/usr/bin/env bash
# Builds the Debian package target/deb/nemosandbox_<version>_amd64.deb with plain dpkg-deb:
#
#   /usr/bin/nemosandbox                     the static binary (scripts/build-static.sh; run only
#                                            when the binary is missing; BIN=PATH packages another)
#   /usr/share/man/man8/*.8.gz               man pages and shell completions, written by the
#   /usr/share/{bash-completion,zsh,fish}/…  binary itself (`nemosandbox generate-docs --out DIR`)
#   /etc/nemosandbox/config.yaml             the node configuration, conffile
#   /etc/nemosandbox/policies/               empty: the administrator's own policies
#   /usr/share/doc/nemosandbox/              copyright (LICENSE), README.md and the shipped
#                                            policies as examples (examples/policies/); the
#                                            binary embeds them, so upgrades bring new versions
#
# No Depends: the binary is static. No maintainer scripts: installing registers nothing with an
# engine (`nemosandbox install docker|podman|containerd|crio` does, on request).
#
# Reproducible: every mtime is clamped to SOURCE_DATE_EPOCH (default: the last commit's time),
# man pages are gzipped without name or time, the umask is fixed, and dpkg-deb sorts the
# archive and takes its member times from SOURCE_DATE_EPOCH. The same binary and sources give
# the same .deb.
set -euo pipefail
# BIN may be relative to the caller's directory.
if [ -n "${BIN:-}" ]; then
    BIN=$(readlink -f -- "$BIN")
fi
cd "$(dirname "$0")/.."
umask 022
export LC_ALL=C TZ=UTC

die() {
    echo "build-deb: $*" >&2
    exit 1
}

for tool in dpkg-deb gzip ldd; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

version=$(awk -F'"' '/^\[/ { in_package = ($0 == "[package]") }
                     in_package && /^version *=/ { print $2; exit }' Cargo.toml)
[ -n "$version" ] || die "no version in Cargo.toml's [package]"

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

default_bin=target/x86_64-unknown-linux-gnu/release/nemosandbox
if [ -n "${BIN:-}" ]; then
    [ -x "$BIN" ] || die "BIN=$BIN is not an executable file"
else
    BIN=$default_bin
    [ -x "$BIN" ] || bash scripts/build-static.sh
    [ -x "$BIN" ] || die "scripts/build-static.sh did not produce $BIN"
fi

# The package declares no dependencies and Architecture amd64: the binary must be a static
# x86-64 executable (ELF e_machine 62 at offset 18). ldd calls a static-pie binary (what
# rustc's crt-static makes) "statically linked" and exits 0, a non-PIE one "not a dynamic
# executable" and exits 1; a dynamic one gets its libraries listed.
[ "$(od -An -tu2 -j18 -N2 "$BIN" | tr -d ' ')" = 62 ] || die "$BIN is not an x86-64 executable"
linkage=$(ldd "$BIN" 2>&1 || true)
case $linkage in
    *"statically linked"* | *"not a dynamic executable"*) ;;
    *) die "$BIN is dynamically linked ($(echo "$linkage" | tr -s '\t\n' '  ')); build it with scripts/build-static.sh" ;;
esac
bin_version=$("$BIN" --version | sed -n '1s/^nemosandbox version //p')
[ "$bin_version" = "$version" ] \
    || die "$BIN reports version '$bin_version', Cargo.toml says '$version' (a stale binary?)"

out=target/deb
pkg=nemosandbox_${version}_amd64
root=$out/$pkg
gen=$out/generated
rm -rf "$root" "$gen"
mkdir -p "$root/DEBIAN" "$gen"

# Binary.
install -D -m 0755 "$BIN" "$root/usr/bin/nemosandbox"

# Man pages and completions, from the binary's own command-line definition.
"$BIN" generate-docs --out "$gen" >/dev/null
for f in man/nemosandbox.8 completions/nemosandbox.bash completions/_nemosandbox \
         completions/nemosandbox.fish; do
    [ -s "$gen/$f" ] || die "nemosandbox generate-docs --out DIR wrote no DIR/$f"
done
install -d -m 0755 "$root/usr/share/man/man8"
for page in "$gen"/man/*.8; do
    gzip -9n -c "$page" >"$root/usr/share/man/man8/$(basename "$page").gz"
done
install -D -m 0644 "$gen/completions/nemosandbox.bash" \
    "$root/usr/share/bash-completion/completions/nemosandbox"
install -D -m 0644 "$gen/completions/_nemosandbox" \
    "$root/usr/share/zsh/vendor-completions/_nemosandbox"
install -D -m 0644 "$gen/completions/nemosandbox.fish" \
    "$root/usr/share/fish/vendor_completions.d/nemosandbox.fish"

# Node configuration and policies.
install -d -m 0755 "$root/etc/nemosandbox/policies"
cat >"$root/etc/nemosandbox/config.yaml" <<'EOF'
# The node configuration of nemosandbox: what this host's administrator fixes for every
# container the runtime creates, whichever engine starts it. The runtime reads it at every
# `create` (another file: the global flag --config FILE). Every key, its default and how
# containers select policies: docs/policy.md, section "Selection", in the nemosandbox sources.
# Unknown keys are errors, and a broken file fails every `create`; after an edit,
# `nemosandbox policy list` shows the policies this file makes available, or the error.
#
# Package upgrades keep an edited copy of this file.

# Directories searched for policies by name before the built-in set (a file here named like a
# built-in replaces it). The shipped ones are in /usr/share/doc/nemosandbox/examples/policies/,
# to read or copy here and adapt.
policy_dirs: [/etc/nemosandbox/policies]

# The baseline every container gets (a name or a file). Unset: the built-in `default`, unless a
# container's annotation dev.nemosandbox.policy names one of allowed_baselines.
# baseline: openclaw-sandbox

# Presets every container gets, before any that annotations add.
# presets: [github]

# Presets the annotation dev.nemosandbox.presets may add. Unset: every installed preset.
# allowed_presets: [github, npm, pypi]

# May annotations name policy files rather than installed names?
allow_policy_files: false

# May policies selected by annotation use `enforcement: audit` (log instead of refuse)?
allow_audit_mode: false

# The node audit sink (docs/audit.md); these are the defaults.
# audit:
#   enabled: true
#   path: /var/log/nemosandbox/audit.jsonl
#   max_size: 64MiB
#   keep: 4
#   format: json
EOF
chmod 0644 "$root/etc/nemosandbox/config.yaml"
install -d -m 0755 "$root/usr/share/doc/nemosandbox/examples/policies"
for p in policies/*.yaml; do
    install -m 0644 "$p" "$root/usr/share/doc/nemosandbox/examples/policies/"
done

# Documentation.
install -D -m 0644 README.md "$root/usr/share/doc/nemosandbox/README.md"
{
    cat <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: nemosandbox

Files: *
Copyright: nemosandbox developers
License: Apache-2.0

License: Apache-2.0
EOF
    # The license text as a continuation field: every line indented, empty lines as " .".
    sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' LICENSE
} >"$root/usr/share/doc/nemosandbox/copyright"
chmod 0644 "$root/usr/share/doc/nemosandbox/copyright"

# Package metadata.
(cd "$root" && find etc -type f | LC_ALL=C sort | sed 's|^|/|') >"$root/DEBIAN/conffiles"
# Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up, plus one per
# directory and symlink.
installed_size=$(cd "$root" && find . -path ./DEBIAN -prune -o ! -path . -printf '%y %s\n' \
    | awk '$1 == "f" { kib += int(($2 + 1023) / 1024); next } { kib += 1 } END { print kib }')
cat >"$root/DEBIAN/control" <<EOF
Package: nemosandbox
Version: $version
Architecture: amd64
Maintainer: nemosandbox developers <nemosandbox@localhost>
Installed-Size: $installed_size
Section: admin
Priority: optional
Description: runc-compatible OCI runtime confining untrusted code
 nemosandbox is called by container engines in place of runc (Docker,
 Podman, containerd, CRI-O, Kubernetes through a RuntimeClass) and confines
 every container with policies the kernel enforces: a read-only mount
 layout, Landlock, seccomp, a per-binary network guard with layer-7 rules,
 an exec gate and symlink guards, with an audit trail of every denial.
 .
 The binary is statically linked. "nemosandbox doctor" reports the kernel
 features enforcement relies on, and "nemosandbox install ENGINE" registers
 the runtime with docker, podman, containerd or CRI-O.
EOF
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles"

# Clamp every mtime; directories 0755.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

deb=$out/$pkg.deb
rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
rm -rf "$gen" "$root"
echo "$deb"
