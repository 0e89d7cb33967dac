# As push.sh, for the uv wheel: stdin to a file, the binary out of it with the server's
# python3 ($1) running unzip_uv.py ($2) on the wheel, the destination and the member
# ($3), then into DATA/bin. One line on the wire, as push.sh says.
d="${XDG_DATA_HOME:-$HOME/.local/share}/jupyter-tether/bin"; umask 077;
t="$d/.in.$$"; mkdir -p "$t" || exit 1;
if cat > "$t/uv.whl" && "$1" -c "$2" "$t/uv.whl" "$t/uv" "$3"; then
    chmod 700 "$t/uv" && mv -f "$t/uv" "$d/uv"; rc=$?;
else
    rc=$?;
fi;
rm -rf "$t"; exit $rc
