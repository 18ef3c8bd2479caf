"""Copy the Python 3.11 tutorial, HOWTOs and FAQ (reST sources) out of Debian's python3.11-doc.

The second real corpus shipped with the repository, beside Shakespeare: modern technical English
with code, so a curate step can mix two very different sources (see workflows/curation.yaml).
The output is byte-for-byte reproducible from the package:

    apt-get download python3.11-doc            # 3.11.2-6+deb12u9 was used
    dpkg-deb -x python3.11-doc_*.deb pydoc
    python workflows/data/make_python_docs.py --sources pydoc/usr/share/doc/python3.11/html/_sources

Each `<section>/<name>.rst.txt` becomes `python-docs/<section>/<name>.rst` with trailing spaces
stripped and runs of blank lines squeezed to one; nothing else is changed (markup stays: it is
part of what a curation pipeline has to cope with). The licence text is copied beside the folder as LICENSE-python-docs.rst (inside it, curate
would read it as one more document).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

SECTIONS = ("tutorial", "howto", "faq")
OUT = Path(__file__).resolve().parent / "python-docs"


def clean(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, required=True, help="html/_sources of the package")
    args = parser.parse_args()
    for section in SECTIONS:
        for src in sorted((args.sources / section).glob("*.rst.txt")):
            if src.name == "index.rst.txt":  # a table of contents, not prose
                continue
            dst = OUT / section / src.name.removesuffix(".txt")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(clean(src.read_text(encoding="utf-8")), encoding="utf-8")
    lic = args.sources / "license.rst.txt"
    (OUT.parent / "LICENSE-python-docs.rst").write_text(clean(lic.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()
