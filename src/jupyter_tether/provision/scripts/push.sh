# Run by the server's login shell as `sh -c`, with a tar on stdin: unpack it into
# DATA/$1 (tar's options in $2: -xf, or -xzf for a gzipped one) by way of a fresh
# directory beside it, then move the files in, so that a half-copied file never sits
# where the builder would use it.
#
# It travels as one line (copy.py drops these comments and joins the lines with
# spaces): every line ends where a space may follow, and nothing below holds a single
# quote or an exclamation mark, so that any login shell (tcsh too) passes it through.
d="${XDG_DATA_HOME:-$HOME/.local/share}/jupyter-tether/$1"; umask 077;
t="$d/.in.$$"; mkdir -p "$t" || exit 1;
if tar "$2" - -C "$t"; then
    for f in "$t"/*; do [ -e "$f" ] && mv -f "$f" "$d/"; done;
    rmdir "$t";
else
    rc=$?; rm -rf "$t"; exit $rc;
fi
