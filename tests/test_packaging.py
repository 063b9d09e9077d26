"""Packaging: ``import pyg_ple`` loads none of the optional dependencies, and the built wheel and sdist install into a
fresh virtual environment with the core dependencies only and run the README's quick tour there."""
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import pyg_ple

REPO = Path(__file__).resolve().parents[1]
NOT_IN_A_CORE_INSTALL = ['sklearn', 'scipy', 'matplotlib', 'rdkit', 'ogb', 'transformers']
TORCH = 'torch==2.13.0'  # the CPU build on this project's machines; a bare `torch` may pull the CUDA build


def test_the_license_is_spdx_and_ships():
    text = (REPO / 'pyproject.toml').read_text()
    assert re.search(r'^license = "MIT"$', text, re.M) and 'license-files = ["LICENSE"]' in text
    assert (REPO / 'LICENSE').read_text().startswith('MIT License')
    version = re.search(r"^__version__ = '([^']+)'$", (REPO / 'pyg_ple' / '__init__.py').read_text(), re.M).group(1)
    assert f'## {version}' in (REPO / 'CHANGELOG.md').read_text()


def _quick_tour() -> str:
    tour = re.search(r'## Quick tour\n\n```python\n(.*?)```', (REPO / 'README.md').read_text(), re.S)
    assert tour, 'the README has no quick tour'
    return tour.group(1)


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f'{cmd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.mark.slow
def test_wheel_and_sdist_install_into_a_fresh_venv_and_run_the_quick_tour(tmp_path):
    # Build from a copy of the files that go into the distributions, so that nothing is written into the repository.
    src = tmp_path / 'src'
    src.mkdir()
    for name in ('pyproject.toml', 'README.md', 'LICENSE', 'CHANGELOG.md'):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / 'pyg_ple', src / 'pyg_ple', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    dist = tmp_path / 'dist'
    _run([sys.executable, '-m', 'build', '--sdist', '--wheel', '--outdir', dist, src], timeout=900)
    wheel, = dist.glob('pyg_ple-*.whl')
    sdist, = dist.glob('pyg_ple-*.tar.gz')
    assert wheel.name.startswith(f'pyg_ple-{pyg_ple.__version__}-')
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    assert any(n.endswith('.dist-info/licenses/LICENSE') for n in names)
    assert 'License-Expression: MIT' in metadata
    requires = re.findall(r'^Requires-Dist: (.*)$', metadata, re.M)
    core = sorted(r.split(';')[0].split('>')[0].split('<')[0].strip() for r in requires if 'extra ==' not in r)
    assert core == ['networkx', 'numpy', 'torch', 'torch-geometric'], core
    assert any(r.startswith('scikit-learn') and 'extra == "bench"' in r for r in requires)

    env_dir = tmp_path / 'venv'
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / 'bin' / 'python'
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')}
    _run([python, '-m', 'pip', 'install', '--quiet', TORCH, wheel], env=env, timeout=1800)
    check = ('import importlib.util, pyg_ple; '
             f'missing = [m for m in {NOT_IN_A_CORE_INSTALL!r} if importlib.util.find_spec(m) is None]; '
             f'assert missing == {NOT_IN_A_CORE_INSTALL!r}, missing; print(pyg_ple.__version__, pyg_ple.__file__)')
    tour = tmp_path / 'tour.py'
    tour.write_text(_quick_tour() + "\nprint('tour ok', tuple(h.shape))\n")
    for distribution in (wheel, sdist):
        if distribution is sdist:
            _run([python, '-m', 'pip', 'install', '--quiet', '--force-reinstall', '--no-deps', sdist], env=env,
                 timeout=900)
        out = _run([python, '-c', check], env=env, cwd=tmp_path, timeout=300).stdout
        assert out.startswith(pyg_ple.__version__) and str(env_dir) in out  # the installed copy, not the source tree
        assert 'tour ok (6, 32)' in _run([python, tour], env=env, cwd=tmp_path, timeout=600).stdout
