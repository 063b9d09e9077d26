"""pyg_ple.hf and ``pyg-ple graph --hf``: the attention of tiny, randomly initialised Hugging Face models (BERT, GPT-2,
ViT; nothing downloaded) as attention graphs, weight for weight."""
import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

import pyg_ple
from pyg_ple import AttentionGraph

transformers = pytest.importorskip('transformers')

from pyg_ple.analysis import attention_summary  # noqa: E402
from pyg_ple.bench.cli import main  # noqa: E402
from pyg_ple.hf import attention_graphs, export_files, load_pretrained  # noqa: E402

VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'the', 'cat', 'sat', 'on', 'mat', 'a', 'dog', 'ran']
TEXTS = ['the cat sat on the mat', 'a dog ran']


@pytest.fixture(scope='module', autouse=True)
def quiet_transformers():
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the tiny configs' token ids draw warnings that are not the point here
    yield
    transformers.logging.set_verbosity(verbosity)


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp('vocab') / 'vocab.txt'
    vocab.write_text('\n'.join(VOCAB) + '\n')
    return transformers.BertTokenizer(str(vocab))


def tiny_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    return transformers.BertModel(config)


def tiny_gpt2():
    torch.manual_seed(1)
    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32, bos_token_id=0,
                                     eos_token_id=0)
    return transformers.GPT2Model(config)


def tiny_vit():
    torch.manual_seed(2)
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                    image_size=8, patch_size=4, num_channels=3)
    return transformers.ViTModel(config)


@pytest.fixture(scope='module')
def bert_folder(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp('hf') / 'tiny-bert'
    tiny_bert().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def reference_attentions(model, **inputs):
    """``output_attentions`` of the model itself with the eager attention, the model left as it was."""
    impl = model.config._attn_implementation
    model.set_attn_implementation('eager')
    model.eval()
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    model.set_attn_implementation(impl)
    return [a.numpy() for a in out.attentions]


def check_graph_against(graph, att, mask, causal=False):
    """Every kept pair reproduces ``att`` weight for weight; the pairs are those of the real tokens (j <= i if
    causal); a padded token has no edge."""
    B, H, T, _ = att.shape
    got = {(j, i): w for (j, i), w in zip(graph.edge_index.t().tolist(), graph.weight.numpy())}
    pairs = {(b * T + j, b * T + i) for b in range(B) for i in range(T) for j in range(T)
             if mask[b, i] and mask[b, j] and (j <= i or not causal)}
    assert set(got) == pairs
    for (j, i), w in got.items():
        b, i, j = i // T, i % T, j % T
        np.testing.assert_array_equal(w, att[b, :, i, j])
    assert torch.equal(graph.batch, torch.arange(B).repeat_interleave(T))


IMPORT_CHECK = """
import builtins, sys
sys.modules['transformers'] = None  # as if not installed: PyG's own optional import of it falls back
importers = []
_import = builtins.__import__
def recording_import(name, globals=None, *args, **kwargs):
    if name.split('.')[0] == 'transformers':
        importers.append((globals or {}).get('__name__'))
    return _import(name, globals, *args, **kwargs)
builtins.__import__ = recording_import
import pyg_ple, pyg_ple.graph, pyg_ple.analysis, pyg_ple.hf
print(sorted({m for m in importers if m and m.startswith('pyg_ple')}))
try:
    pyg_ple.hf.load_pretrained(sys.argv[1])
except ImportError as e:
    print(e)
print(sorted({m for m in importers if m and m.startswith('pyg_ple')}))
"""


@pytest.mark.slow
def test_import_pyg_ple_does_not_import_transformers():
    """No module of pyg_ple imports transformers when imported (PyG itself may, optionally: torch_geometric.llm);
    pyg_ple.hf imports it when called, and says how to install it when it is missing."""
    env = {**os.environ, 'PYTHONPATH': str(Path(pyg_ple.__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, '-c', IMPORT_CHECK, str(Path(__file__).parent)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    at_import, message, when_called = proc.stdout.strip().splitlines()
    assert at_import == '[]'
    assert message == ("pyg_ple.hf needs the transformers package, which is not installed: "
                       "pip install 'pyg-ple[hf]'")
    assert when_called == "['pyg_ple.hf']"  # the recording sees pyg_ple's own imports


def test_bert_with_padding_weight_for_weight(tokenizer):
    model = tiny_bert().train()
    enc = tokenizer(TEXTS, padding=True, return_tensors='pt')
    assert enc['attention_mask'][1].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]  # the second text is padded
    assert model.config._attn_implementation == 'sdpa'
    with pytest.warns(UserWarning, match="uses the 'sdpa' attention, which returns no attention weights"):
        graphs = attention_graphs(model, tokenizer, **enc)
    # The model is left as it was: its attention and its mode.
    assert model.config._attn_implementation == 'sdpa' and model.training
    ref = reference_attentions(model, **enc)
    assert len(graphs) == 2 and all(isinstance(g, AttentionGraph) for g in graphs)
    for g, att in zip(graphs, ref):
        assert g.num_nodes == 16 and g.heads == 2
        check_graph_against(g, att, enc['attention_mask'])
        assert g.num_edges == 8 * 8 + 5 * 5
    assert graphs[0].tokens[:8] == ['[CLS]', 'the', 'cat', 'sat', 'on', 'the', 'mat', '[SEP]']
    assert graphs[0].tokens[8:] == ['[CLS]', 'a', 'dog', 'ran', '[SEP]', '[PAD]', '[PAD]', '[PAD]']
    # Text in, the same graphs out; an eager model runs without a warning.
    model.set_attn_implementation('eager')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        again = attention_graphs(model, tokenizer, text=TEXTS)
    for g, h in zip(graphs, again):
        assert torch.equal(g.edge_index, h.edge_index) and torch.equal(g.weight, h.weight) and g.tokens == h.tokens


def test_gpt2_causal_pattern():
    model = tiny_gpt2().eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with pytest.warns(UserWarning, match='eager attention'):
        graphs = attention_graphs(model, input_ids=ids, attention_mask=mask)
    ref = reference_attentions(model, input_ids=ids, attention_mask=mask)
    assert len(graphs) == 2
    for g, att in zip(graphs, ref):
        check_graph_against(g, att, mask, causal=True)
        assert g.num_edges == 21 + 10
        src, dst = g.edge_index % 6
        assert bool((src <= dst).all())
    # Without a mask every token is real: the full lower triangle of both sequences.
    with pytest.warns(UserWarning):
        plain = attention_graphs(model, input_ids=ids)
    assert plain[0].num_edges == 2 * 21


def test_vit_patches_and_class_token():
    model = tiny_vit().eval()
    pixels = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning):
        graphs = attention_graphs(model, pixel_values=pixels)
    ref = reference_attentions(model, pixel_values=pixels)
    T = 1 + (8 // 4) ** 2  # class token and 4 patches
    assert len(graphs) == 2 and graphs[0].num_nodes == 2 * T and graphs[0].tokens is None
    for g, att in zip(graphs, ref):
        check_graph_against(g, att, torch.ones(2, T, dtype=torch.bool))


def test_encoder_decoder_model_is_refused_with_advice():
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                   decoder_start_token_id=0)
    model = transformers.T5Model(config).eval()
    ids = torch.tensor([[1, 2, 3]])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match='encoder-decoder model: pass model.get_encoder()'):
            attention_graphs(model, input_ids=ids, decoder_input_ids=ids)
        graphs = attention_graphs(model.get_encoder(), input_ids=ids)
    assert len(graphs) == 1 and graphs[0].num_edges == 9


def test_attention_graphs_rejects_bad_input(tokenizer):
    model = tiny_bert()
    model.set_attn_implementation('eager')
    ids = torch.tensor([[2, 5, 6, 3]])
    with pytest.raises(TypeError, match="'model' must be a Hugging Face transformers model"):
        attention_graphs(torch.nn.Linear(2, 2), input_ids=ids)
    with pytest.raises(TypeError, match="'text' needs a 'tokenizer'"):
        attention_graphs(model, text='the cat')
    with pytest.raises(TypeError, match='no model inputs'):
        attention_graphs(model)
    with pytest.raises(TypeError, match="pass either 'text' or 'input_ids'"):
        attention_graphs(model, tokenizer, text='the cat', input_ids=ids)
    with pytest.raises(ValueError, match=r"'attention_mask' must have shape \[B, T\] = \[1, 4\]"):
        attention_graphs(model, input_ids=ids, attention_mask=torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match='the inputs have 40 tokens; BertModel reads at most 32'):
        attention_graphs(model, input_ids=torch.ones(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match='hold no token'):
        attention_graphs(model, input_ids=torch.ones(1, 0, dtype=torch.long))


def test_load_pretrained_reads_a_local_folder(bert_folder, tokenizer):
    model, tok = load_pretrained(bert_folder)
    assert type(model).__name__ == 'BertModel' and model.config._attn_implementation == 'eager'
    assert not model.training and tok is not None
    assert tok.convert_ids_to_tokens(tok('the cat')['input_ids']) == ['[CLS]', 'the', 'cat', '[SEP]']
    saved = tiny_bert()  # the same seed: the weights that were saved
    for (name, p), (_, q) in zip(model.state_dict().items(), saved.state_dict().items()):
        assert torch.equal(p, q), name
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # loaded eager: no switch
        graphs = attention_graphs(model, tok, text='the cat sat')
    assert graphs[0].tokens == ['[CLS]', 'the', 'cat', 'sat', '[SEP]']


def test_load_pretrained_rejects_what_is_not_a_model_folder(tmp_path, bert_folder):
    with pytest.raises(ValueError, match='no such folder'):
        load_pretrained(tmp_path / 'missing')
    (tmp_path / 'file.txt').write_text('x')
    with pytest.raises(ValueError, match='is a file, not a Hugging Face model folder'):
        load_pretrained(tmp_path / 'file.txt')
    with pytest.raises(ValueError, match='it has no config.json'):
        load_pretrained(tmp_path)
    no_weights = tmp_path / 'no-weights'
    no_weights.mkdir()
    (no_weights / 'config.json').write_text((bert_folder / 'config.json').read_text())
    with pytest.raises(ValueError, match='holds no model weights'):
        load_pretrained(no_weights)
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'config.json').write_text(json.dumps({'model_type': 'no-such-architecture'}))
    (bad / 'model.safetensors').write_bytes((bert_folder / 'model.safetensors').read_bytes())
    with pytest.raises(ValueError, match='cannot be loaded as a Hugging Face model'):
        load_pretrained(bad)
    (bad / 'config.json').write_text((bert_folder / 'config.json').read_text())
    (bad / 'model.safetensors').write_bytes(b'not safetensors')
    with pytest.raises(ValueError, match='cannot be loaded as a Hugging Face model'):
        load_pretrained(bad)
    remote = tmp_path / 'remote'
    remote.mkdir()
    config = json.loads((bert_folder / 'config.json').read_text())
    config['auto_map'] = {'AutoConfig': 'evil.EvilConfig', 'AutoModel': 'evil.EvilModel'}
    config['model_type'] = 'evil'
    (remote / 'config.json').write_text(json.dumps(config))
    (remote / 'evil.py').write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\n")
    (remote / 'model.safetensors').write_bytes((bert_folder / 'model.safetensors').read_bytes())
    with pytest.raises(ValueError, match='cannot be loaded as a Hugging Face model'):
        load_pretrained(remote)
    assert not (tmp_path / 'ran').exists()  # the folder's code never ran


def test_cli_graph_hf_writes_graphml_png_and_summary(bert_folder, tmp_path, capsys):
    out = tmp_path / 'out'
    text = 'the cat sat on the mat'
    assert main(['graph', '--hf', str(bert_folder), '--text', text, '--out', str(out)]) == 0
    stdout = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(['pyg-ple-manifest.json', 'tiny-bert_summary.csv', 'tiny-bert_summary.md']
                           + [f'tiny-bert_l{layer}_hmean.{ext}' for layer in (0, 1) for ext in ('graphml', 'png')])
    assert '| layer | head | entropy (nats) |' in stdout
    model, tok = load_pretrained(bert_folder)
    graphs = attention_graphs(model, tok, text=text)
    for layer in (0, 1):
        G = nx.read_graphml(out / f'tiny-bert_l{layer}_hmean.graphml')
        assert G.graph['layer'] == layer and G.graph['text'] == text and G.graph['model_type'] == 'bert'
        assert [G.nodes[n]['token'] for n in sorted(G.nodes, key=int)] == graphs[layer].tokens
        dense = graphs[layer].to_dense()[0].numpy()  # [H, T, T]
        A = nx.to_numpy_array(G, nodelist=[str(n) for n in range(8)]).T
        np.testing.assert_allclose(A, dense.mean(0), rtol=1e-6)
        A1 = nx.to_numpy_array(G, nodelist=[str(n) for n in range(8)], weight='head1').T
        np.testing.assert_allclose(A1, dense[1], rtol=1e-6)
        assert (out / f'tiny-bert_l{layer}_hmean.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(ValueError, match=r"'layers' must be layer indices in \[0, 2\) \(got \[2\]\)"):
        export_files(graphs, 'x', layers=[2])
    with open(out / 'tiny-bert_summary.csv') as f:
        rows = list(csv.DictReader(f))
    expected = attention_summary(graphs)
    assert [(int(r['layer']), int(r['head'])) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r, e in zip(rows, expected):
        for key in ('entropy', 'distance', 'spectral_gap'):
            assert float(r[key]) == pytest.approx(e[key], rel=1e-5)
    # One layer and head; the folder is added to.
    assert main(['graph', '--hf', str(bert_folder), '--text', 'a dog', '--out', str(out), '--layer', '-1',
                 '--head', '0']) == 0
    G = nx.read_graphml(out / 'tiny-bert_l1_h0.graphml')
    assert G.number_of_nodes() == 4 and G.graph['head'] == 0 and G.graph['layer'] == 1


@pytest.mark.parametrize('case, argv, message', [
    ('missing-folder', ['--hf', '{tmp}/missing', '--text', 'x', '--out', '{tmp}/o'], '--hf: no such folder'),
    ('not-a-model-folder', ['--hf', '{tmp}', '--text', 'x', '--out', '{tmp}/o'], 'it has no config.json'),
    ('no-text', ['--hf', '{bert}', '--out', '{tmp}/o'], '--hf PATH and --text "..." go together'),
    ('text-only', ['--text', 'x', '--out', '{tmp}/o'], '--hf PATH and --text "..." go together'),
    ('both', ['model.pt', '--hf', '{bert}', '--text', 'x', '--out', '{tmp}/o'], 'pass either a checkpoint or --hf'),
    ('index', ['--hf', '{bert}', '--text', 'x', '--index', '1', '--out', '{tmp}/o'], '--index and --root choose'),
    ('no-out', ['--hf', '{bert}', '--text', 'x'], '--hf needs --out'),
    ('layer', ['--hf', '{bert}', '--text', 'the cat', '--layer', '2', '--out', '{tmp}/o'],
     '--layer 2 is out of range: the model has 2 layers'),
    ('head', ['--hf', '{bert}', '--text', 'the cat', '--head', '2', '--out', '{tmp}/o'],
     '--head 2 is out of range: the model has 2 heads'),
    ('too-long', ['--hf', '{bert}', '--text', ' '.join(['cat'] * 40), '--out', '{tmp}/o'],
     'the inputs have 42 tokens; BertModel reads at most 32'),
    ('nothing', [], 'pass a model file written by pyg-ple bench, or a Hugging Face model folder with --hf'),
])
def test_cli_graph_hf_bad_input_exits_2_with_one_line(case, argv, message, tmp_path, bert_folder, capsys):
    argv = [a.format(tmp=tmp_path, bert=bert_folder) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(['graph', *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith('pyg-ple graph: error: ') and message in err, err
    assert not (tmp_path / 'o').exists()


@pytest.mark.slow
def test_cli_graph_hf_one_line_in_a_fresh_process(tmp_path, bert_folder):
    """With transformers' own logging as it is by default: a folder transformers cannot read is one line, no
    traceback."""
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'config.json').write_text(json.dumps({'model_type': 'no-such-architecture'}))
    (bad / 'model.safetensors').write_bytes((bert_folder / 'model.safetensors').read_bytes())
    env = {**os.environ, 'PYTHONPATH': str(Path(pyg_ple.__file__).resolve().parents[1]), 'HF_HUB_OFFLINE': '1'}
    proc = subprocess.run([sys.executable, '-m', 'pyg_ple', 'graph', '--hf', str(bad), '--text', 'x', '--out',
                           str(tmp_path / 'o')], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ''
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'pyg-ple graph: error: --hf: {bad} cannot be loaded as a Hugging '
                                                   'Face model: '), proc.stderr
    assert not (tmp_path / 'o').exists()
