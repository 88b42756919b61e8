"""Each lesion's kind (bright, dark, cavity, foreign, mirror) in `bench triage` whole-head study sets, by study id and
lesion number, for the by-kind table of docs/bench/screen-members/members.py (which reads STUDIES_DIR/kinds.json
when it is there). The studies are drawn again from their seeds (docs/bench/small-ceiling/ceiling.py's `redrawn`,
checked against the saved studies). A prefix is put before each set's ids, as in a folder that joins several sets.

    python docs/bench/screen-mirror-dae/kinds.py OUT.json STUDIES_DIR SEED PREFIX [STUDIES_DIR SEED PREFIX ...]
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "docs" / "bench" / "small-ceiling"))
from ceiling import redrawn  # noqa: E402


def main():
    out, args = Path(sys.argv[1]), sys.argv[2:]
    kinds = {}
    for folder, seed, prefix in zip(args[::3], map(int, args[1::3]), args[2::3], strict=True):
        for r, *_, records, _saved in redrawn(Path(folder), seed):
            kinds[prefix + r["id"]] = [rec.kind for rec in records]
    out.write_text(json.dumps(kinds, indent=1) + "\n")
    print(f"{sum(map(len, kinds.values()))} lesions in {len(kinds)} studies", file=sys.stderr)


if __name__ == "__main__":
    main()
