"""attncond works from inside a user's project that has its own ``models/``, ``spectral/`` and
``proofs_check/`` packages (most ML repositories have a ``models/``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
import models  # the user's own package, first on sys.path
assert models.USER_PACKAGE is True, "the user's models package must stay the user's"
import attncond.spectral as spectral
from attncond.models import MultiHeadAttention, synthetic_regression
from attncond.spectral.diagnostics import pl_constant
X = synthetic_regression(N=3, n=4, D=6, seed=0).X
m = MultiHeadAttention(6, 3, 2, seed=1)
pl = pl_constant(m, X)
est = spectral.extreme_singular_values(spectral.JacobianOperator(m.functional, m.params(), (X,)))
import models as again
print(json.dumps({"mu": pl.mu, "smax": est.sigma_max, "user": again.USER_PACKAGE,
                  "ours": sys.modules["attncond.models"].__file__}))
"""


def _user_project(tmp: Path) -> Path:
    for pkg in ("models", "spectral", "proofs_check"):
        d = tmp / pkg
        d.mkdir()
        body = "USER_PACKAGE = True\n" if pkg == "models" else "raise ImportError('the user package')\n"
        (d / "__init__.py").write_text(body + "class AttentionBlock: pass\n")
    (tmp / "run.py").write_text(SCRIPT)
    return tmp


def test_script_in_a_user_project_gets_attncond_not_the_users_packages(tmp_path):
    proj = _user_project(tmp_path)
    # the user's project first on sys.path, the checkout after it (as with an editable install)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(proj), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "run.py"], cwd=proj, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["user"] is True
    assert Path(got["ours"]).resolve() == (ROOT / "models" / "__init__.py").resolve()
    # the same numbers as in this process (same code, same seeds)
    from attncond.models import MultiHeadAttention, synthetic_regression
    from attncond.spectral.diagnostics import pl_constant

    X = synthetic_regression(N=3, n=4, D=6, seed=0).X
    mu = pl_constant(MultiHeadAttention(6, 3, 2, seed=1), X).mu
    assert abs(got["mu"] - mu) <= 1e-12 * max(abs(mu), 1e-300)
    assert got["smax"] > 0


def test_short_names_are_aliases_of_the_same_modules():
    import attncond.models.kernels as long_kernels
    import attncond.spectral as long_spectral
    import models.kernels as short_kernels
    import spectral as short_spectral

    assert short_kernels is long_kernels and short_spectral is long_spectral
    assert long_kernels.__spec__.name == "attncond.models.kernels"
