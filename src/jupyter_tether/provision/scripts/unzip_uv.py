# Run on the server by the python3 that runs the builder (any Python >= 3.8), through
# push_uv.sh: argv is the uv wheel, the destination and the member to write there.
# It travels as one line (copy.py joins the lines with "; "): one simple statement a line.
import pathlib
import sys
import zipfile

a = sys.argv
pathlib.Path(a[2]).write_bytes(zipfile.ZipFile(a[1]).read(a[3]))
