"""pyg-ple never deletes or overwrites a file it did not write: output folders carry a manifest of pyg-ple's files."""
from __future__ import annotations

import json
import os

import pytest

from pyg_ple.bench.cli import main
from pyg_ple.bench.io import MANIFEST_NAME, RunFileError, RunFolder

TINY = ['bench', '--digits-n', '40', '--folds', '2', '--epochs', '1', '--models', 'gcn', '--no-progress',
        '--threads', '1']


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.mark.slow
def test_bench_into_a_folder_of_someone_elses_files_touches_none_of_them(tmp_path, monkeypatch, capsys):
    # mkdir -p proj/models proj/checkpoints; echo code > proj/models/my_model.py; touch proj/checkpoints/x.ckpt
    # pyg-ple bench --epochs 1 --folds 2 --models gcn --no-save-models --out proj
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'proj' / 'models').mkdir(parents=True)
    (tmp_path / 'proj' / 'checkpoints').mkdir()
    (tmp_path / 'proj' / 'models' / 'my_model.py').write_text('code\n')
    (tmp_path / 'proj' / 'checkpoints' / 'x.ckpt').touch()
    with pytest.raises(SystemExit) as e:
        main(['bench', '--epochs', '1', '--folds', '2', '--models', 'gcn', '--no-save-models', '--out', 'proj'])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f'pyg-ple bench: error: --out proj is not empty and holds no {MANIFEST_NAME} (it was not written '
                   'by pyg-ple); choose a new or empty folder')
    assert _files(tmp_path / 'proj') == {'models/my_model.py': b'code\n', 'checkpoints/x.ckpt': b''}
    for flag in ('--resume', '--overwrite'):  # neither option makes the folder pyg-ple's
        with pytest.raises(SystemExit):
            main(['bench', '--epochs', '1', '--folds', '2', '--models', 'gcn', '--out', 'proj', flag])
        assert _files(tmp_path / 'proj') == {'models/my_model.py': b'code\n', 'checkpoints/x.ckpt': b''}


@pytest.mark.slow
def test_rerun_is_refused_and_overwrite_removes_only_the_earlier_runs_files(tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(TINY + ['--models', 'gcn,laplacian', '--out', str(out)]) == 0
    assert main(['graph', str(out / 'models' / 'laplacian_fold0.pt')]) == 0  # into out/attention/
    first = _files(out)
    written = set(json.loads(first[MANIFEST_NAME])['files'])
    assert written == set(first) - {MANIFEST_NAME}  # the manifest lists every file the run wrote
    assert {'models/gcn_fold1.pt', 'state.json', 'splits.json', 'results.png'} <= written
    assert any(f.startswith('attention/') for f in written)
    (out / 'notes.md').write_text('my notes')
    (out / 'models' / 'mine.py').write_text('my code')
    capsys.readouterr()

    with pytest.raises(SystemExit) as e:  # again without --resume or --overwrite: refused, nothing changes
        main(TINY + ['--out', str(out)])
    assert e.value.code == 2
    assert '--resume' in capsys.readouterr().err and _files(out) == {**first, 'notes.md': b'my notes',
                                                                      'models/mine.py': b'my code'}

    assert main(TINY + ['--no-save-models', '--overwrite', '--out', str(out)]) == 0
    after = _files(out)
    assert after['notes.md'] == b'my notes' and after['models/mine.py'] == b'my code'
    assert not [f for f in after if f.endswith('.pt') or f.startswith('attention/')]
    assert not (out / 'attention').exists()  # a folder only the earlier run had used is gone
    assert set(json.loads(after[MANIFEST_NAME])['files']) == set(after) - {MANIFEST_NAME, 'notes.md', 'models/mine.py'}
    assert [r['model'] for r in json.loads(after['results.json'])['results']] == ['gcn']


def test_run_folder_refuses_unlisted_files_and_paths_out_of_the_folder(tmp_path):
    run = RunFolder(tmp_path / 'r', 'new').prepare()
    run.write_text('a/b.txt', 'x')
    (tmp_path / 'r' / 'theirs.txt').write_text('theirs')
    with pytest.raises(RunFileError, match='not written by pyg-ple'):
        run.write_text('theirs.txt', 'mine')
    for rel in ('../escape.txt', '/etc/passwd', MANIFEST_NAME, ''):
        with pytest.raises(RunFileError):
            run.claim(rel)
    run.remove('theirs.txt')  # not listed: kept
    assert (tmp_path / 'r' / 'theirs.txt').read_text() == 'theirs'
    run.remove('a/b.txt')
    assert not (tmp_path / 'r' / 'a').exists()
    with pytest.raises(ValueError, match='mode'):
        RunFolder(tmp_path, 'append')
    with pytest.raises(RuntimeError, match='prepare'):  # the manifest must be read before anything is written
        RunFolder(tmp_path / 'q', 'new').claim('x.txt')


def test_overwrite_never_follows_an_edited_manifest_or_a_link_out_of_the_folder(tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'keep.txt').write_text('keep')
    root = tmp_path / 'r'
    RunFolder(root, 'new').prepare().write_text('models/m.pt', 'model')
    manifest = root / MANIFEST_NAME
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, 'files': doc['files'] + ['z/../../outside/keep.txt']}))
    with pytest.raises(RunFileError, match='not a file name inside'):
        RunFolder(root, 'overwrite').prepare()
    assert (outside / 'keep.txt').exists() and (root / 'models' / 'm.pt').exists()

    manifest.write_text(json.dumps({**doc, 'files': ['linked/keep.txt']}))
    os.symlink(outside, root / 'linked')
    with pytest.raises(RunFileError, match='leads out of the run folder'):
        RunFolder(root, 'overwrite').prepare()
    assert (outside / 'keep.txt').read_text() == 'keep'

    manifest.write_text('{"files": "everything"}')
    with pytest.raises(RunFileError, match='not a pyg-ple manifest'):
        RunFolder(root, 'resume').check()


def _holds_lock(folder, cache) -> int:
    """Exit status of another process that tries to take the lock of ``folder``: 0 it got it, 3 it is held."""
    import subprocess
    import sys
    probe = ('import sys\nfrom pyg_ple.bench.io import RunFileError, run_folder_lock\n'
             'try:\n    with run_folder_lock(sys.argv[1]):\n        pass\nexcept RunFileError:\n    sys.exit(3)\n')
    return subprocess.run([sys.executable, '-c', probe, str(folder)], env={**os.environ, 'PYG_PLE_CACHE': str(cache)},
                          timeout=120).returncode


def test_one_process_at_a_time_holds_a_run_folder(tmp_path, monkeypatch):
    from pyg_ple.bench.io import run_folder_lock
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    with run_folder_lock(tmp_path / 'run'):
        assert _holds_lock(tmp_path / 'run', tmp_path / 'cache') == 3
        assert _holds_lock(tmp_path / 'x' / '..' / 'run', tmp_path / 'cache') == 3  # the same folder, spelled otherwise
        assert _holds_lock(tmp_path / 'other', tmp_path / 'cache') == 0
    assert _holds_lock(tmp_path / 'run', tmp_path / 'cache') == 0  # released at the end of the block
    assert not (tmp_path / 'run').exists()  # the lock file is not in the run folder


def test_bench_into_a_folder_another_run_is_writing_is_refused(tmp_path, monkeypatch, capsys):
    from pyg_ple.bench.io import run_folder_lock
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'x').mkdir()
    with run_folder_lock(tmp_path / 'run'), pytest.raises(SystemExit) as e:  # as a second process would find it
        main([*TINY, '--out', 'x/../run', '--resume'])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'in use by another pyg-ple run' in err and 'x/../run' in err
    assert not (tmp_path / 'run').exists()


def test_a_cache_where_no_lock_can_be_made_is_a_clear_error(tmp_path, monkeypatch, capsys):
    (tmp_path / 'cache').write_text('a file, not a folder')
    monkeypatch.setenv('PYG_PLE_CACHE', str(tmp_path / 'cache'))
    with pytest.raises(SystemExit) as e:
        main([*TINY, '--out', str(tmp_path / 'run')])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'PYG_PLE_CACHE' in err and 'lock' in err
