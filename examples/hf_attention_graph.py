"""The attention of a Hugging Face transformer as PyG graphs, and graph measures of it, offline.

A tiny, randomly initialised BERT (and a word-level tokenizer for the words of the texts) stands in for a trained
model, so that the script runs without a download; it is saved to a temporary folder and read back the way
``pyg-ple graph --hf`` reads a real one (``pyg_ple.hf.load_pretrained``: local files only, no code from the folder).
Two texts of different lengths run as one padded batch; ``pyg_ple.hf.attention_graphs`` gives one
``AttentionGraph`` per layer (node ``b*T + t`` is token ``t`` of text ``b``, an edge ``j -> i`` per pair of real
tokens, the padding isolated), and ``pyg_ple.analysis`` measures them: entropy, distance, spectral gap per head, head
similarity, rollout over the layers. With a trained model, pass its folder to ``--hf`` instead::

    python examples/hf_attention_graph.py --out runs/hf_attention
    python examples/hf_attention_graph.py --hf path/to/bert-base-uncased --out runs/bert_attention  # a local folder
    pyg-ple graph --hf path/to/bert-base-uncased --text "the cat sat on the mat" --out runs/bert_graph

Files in ``--out``: per layer ``<model>_l<layer>_hmean.graphml`` / ``.png`` of the first text, ``<model>_summary.csv``
/ ``.md`` and ``<model>_rollout.graphml``. Needs ``pip install 'pyg-ple[hf]'``. A folder that pyg-ple did not write is
refused (nothing in it is touched).
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
from pathlib import Path

import networkx as nx
import torch

from pyg_ple.analysis import attention_rollout, head_similarity, spectral_gap
from pyg_ple.bench.io import RunFileError, RunFolder
from pyg_ple.hf import attention_graphs, export_files, load_pretrained, summary_table

TEXTS = ['The cat sat on the mat, and the dog watched the cat.', 'A dog ran home.']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--text', action='append', default=None, help='a text (repeat for a batch; default: two texts)')
    p.add_argument('--hf', default=None, help='a local Hugging Face model folder (default: a tiny random BERT)')
    p.add_argument('--layers', type=int, default=2, help='layers of the tiny random BERT')
    p.add_argument('--heads', type=int, default=2, help='heads of the tiny random BERT')
    p.add_argument('--hidden', type=int, default=32, help='width of the tiny random BERT')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='hf_attention_graph_out', help='output folder (new, empty or written by pyg-ple)')
    args = p.parse_args(argv)
    if args.hidden % args.heads or args.layers < 1:
        p.error('--hidden must be a multiple of --heads, and --layers positive')
    return args


def tiny_bert(folder: Path, texts: list[str], layers: int, heads: int, hidden: int, seed: int) -> None:
    """Save a random BERT with a word-level vocabulary of ``texts`` to ``folder``."""
    import transformers

    words = sorted({w for t in texts for w in re.findall(r'\w+|[^\w\s]', t.lower())})
    vocab = folder / 'vocab.txt'
    vocab.write_text('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *words]) + '\n')
    tokenizer = transformers.BertTokenizer(str(vocab))
    torch.manual_seed(seed)
    # initializer_range 0.2 rather than BERT's 0.02: at 0.02 a random model attends almost uniformly everywhere.
    config = transformers.BertConfig(vocab_size=len(words) + 5, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=2 * hidden,
                                     max_position_embeddings=128, initializer_range=0.2)
    transformers.utils.logging.disable_progress_bar()
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main(argv=None) -> int:
    args = parse_args(argv)
    texts = args.text or TEXTS
    run = RunFolder(args.out, 'add')
    try:
        run.check()
    except RunFileError as e:
        print(f'hf_attention_graph.py: error: --out {e}', file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(args.hf) if args.hf else Path(tmp) / 'tiny-bert'
            if not args.hf:
                folder.mkdir()
                tiny_bert(folder, texts, args.layers, args.heads, args.hidden, args.seed)
            model, tokenizer = load_pretrained(folder)
    except (ImportError, ValueError) as e:
        print(f'hf_attention_graph.py: error: {e}', file=sys.stderr)
        return 2
    if tokenizer is None:
        print(f'hf_attention_graph.py: error: {folder} has no tokenizer', file=sys.stderr)
        return 2

    graphs = attention_graphs(model, tokenizer, text=texts)  # one AttentionGraph per layer
    first = graphs[0]
    print(f'{len(texts)} texts, {len(graphs)} layers; layer 0: {first}')
    print('tokens of the first text:', ' '.join(t for t in first.graph(0).tokens if t != tokenizer.pad_token))
    for layer, g in enumerate(graphs):
        gap = spectral_gap(g)  # [texts, heads]
        sim = head_similarity(g)  # [heads, heads], Jensen-Shannon
        print(f'layer {layer}: spectral gap per head (first text) {[round(float(x), 3) for x in gap[0]]}, '
              f'head similarity (0, 1) {float(sim[0, 1]) if g.heads > 1 else 1.0:.3f}')
    rollout = attention_rollout(graphs)  # [E, 1]: the share of input token j in output token i
    single = [g.graph(0) for g in graphs]  # the first text alone
    name = 'tiny-bert' if not args.hf else re.sub(r'[^\w.-]', '_', Path(args.hf).resolve().name)
    files = export_files(single, name, graph_attrs={'model': name, 'text': texts[0]})
    print(files[f'{name}_summary.md'].decode(), end='')
    G = rollout.graph(0).to_networkx()
    G.graph.update(model=name, text=texts[0], kind='rollout')
    buf = io.BytesIO()
    nx.write_graphml(G, buf)
    files[f'{name}_rollout.graphml'] = buf.getvalue()
    run.prepare()
    for rel, data in files.items():
        print(f'wrote {run.write_bytes(rel, data)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
