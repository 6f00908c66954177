"""Where the real wsolevaluation annotation files are (``shared/fixtures/wsolevaluation``, data only).

The project's checkout keeps them beside it (``<checkout>/../shared``) or inside it
(``<checkout>/shared``, e.g. on a machine that copies the working tree); the first
that exists is used, so the tests find them from any worktree.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [ROOT / "shared", ROOT.parent / "shared"]

#: ``.../fixtures/wsolevaluation`` with ``metadata/`` and ``masks/``.
WSOLEVAL_FIXTURES = next((c / "fixtures" / "wsolevaluation" for c in _CANDIDATES
                          if (c / "fixtures" / "wsolevaluation" / "metadata").is_dir()),
                         ROOT.parent / "shared" / "fixtures" / "wsolevaluation")
