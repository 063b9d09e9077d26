"""Train a small Laplacian transformer, take one layer's attention as a graph, sparsify it and export it.

Uses the public API only: :class:`pyg_ple.PLETransformer` classifies scikit-learn's 8x8 digits turned into graphs
(ink pixels as nodes, 8-neighbour pixel edges; offline), and ``PLETransformer.attention_graph`` returns the attention
of one block on one digit as a :class:`pyg_ple.AttentionGraph`. ``topk`` keeps every pixel's strongest incoming
edges; the result is written as GraphML (readable by networkx, Gephi, Cytoscape) and drawn on the pixel grid::

    python examples/attention_graph.py                       # about 10 s on one core
    python examples/attention_graph.py --epochs 1 --graphs 60 --out runs/attention_graph

Files: ``<out>/attention_graph.graphml`` and ``<out>/attention_graph.png``. The script refuses to replace a file in
``--out`` that it did not write itself (it lists what it wrote in ``<out>/.attention_graph_files``).
Needs scikit-learn and matplotlib (``pip install "pyg-ple[bench]"``).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import matplotlib
import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_add_pool, global_mean_pool
from torch_geometric.utils import subgraph

from pyg_ple import AttentionGraph, PLETransformer

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

OUTPUTS = ('attention_graph.graphml', 'attention_graph.png')
MANIFEST = '.attention_graph_files'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--graphs', type=int, default=300, help='digits to train on (stratified subset)')
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--hidden', type=int, default=32)
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--layer', type=int, default=-1, help='block whose attention is exported (-1: the last)')
    p.add_argument('--head', type=int, default=None, help='head whose weights rank the edges (default: the mean)')
    p.add_argument('--k', type=int, default=3, help='incoming edges kept per pixel')
    p.add_argument('--index', type=int, default=0, help='which digit to export')
    p.add_argument('--out', default='attention_graph_out', help='output folder (created if needed)')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    if not -args.layers <= args.layer < args.layers:
        p.error(f'--layer {args.layer} is not a block of a {args.layers}-layer model')
    if not 10 <= args.graphs <= 1787 or not 0 <= args.index < args.graphs or args.k < 1 or args.epochs < 0:
        p.error('--graphs must be 10 to 1787, --index below --graphs, --k positive and --epochs non-negative')
    foreign = foreign_outputs(Path(args.out))
    if foreign:
        p.error(f'{args.out} already holds {", ".join(foreign)}, which this script did not write; choose another --out')
    return args


def foreign_outputs(out: Path) -> list[str]:
    """The output names that ``out`` already holds and this script did not write."""
    manifest = out / MANIFEST
    mine = set(manifest.read_text().split()) if manifest.exists() else set()
    return [name for name in OUTPUTS if (out / name).exists() and name not in mine]


def digit_graphs(n: int, seed: int) -> list[Data]:
    """A stratified subset of ``n`` digits as graphs: the ink pixels, 8-neighbour grid edges among them, and node
    features intensity + one-hot row + one-hot column (17)."""
    images, labels = load_digits(return_X_y=True)
    idx, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    idx = np.sort(idx)
    pixel = torch.arange(64)
    rows, cols = pixel // 8, pixel % 8
    near = ((rows[:, None] - rows[None, :]).abs() <= 1) & ((cols[:, None] - cols[None, :]).abs() <= 1)
    edge_index = (near & ~torch.eye(64, dtype=torch.bool)).T.nonzero().T.flip(0)  # [source, target], by target
    position = torch.cat([F.one_hot(rows, 8), F.one_hot(cols, 8)], dim=1).float()
    graphs = []
    for i in idx:
        intensity = torch.from_numpy(images[i].astype(np.float32) / 16.0).view(64, 1)
        keep = intensity[:, 0] > 0
        ei, _ = subgraph(keep, edge_index, relabel_nodes=True, num_nodes=64)
        graphs.append(Data(x=torch.cat([intensity, position], dim=1)[keep], edge_index=ei, pixel=pixel[keep],
                           y=torch.tensor([int(labels[i])])))
    return graphs


class Classifier(torch.nn.Module):
    """Node encoder, a stack of Laplacian-transformer blocks over the native edges, mean+sum pooling, a linear head."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int, layers: int, heads: int):
        super().__init__()
        self.encoder = torch.nn.Linear(in_channels, hidden)
        self.transformer = PLETransformer(hidden, heads=heads, num_layers=layers, mlp_ratio=2.0, norm='batch',
                                          prenorm=False, degree_scaler=True)
        self.head = torch.nn.Linear(2 * hidden, num_classes)

    def forward(self, data) -> torch.Tensor:
        h = self.transformer(self.encoder(data.x), data.edge_index, batch=data.batch)
        return self.head(torch.cat([global_mean_pool(h, data.batch), global_add_pool(h, data.batch)], dim=1))

    def attention_graph(self, data, layer: int) -> AttentionGraph:
        return self.transformer.attention_graph(self.encoder(data.x), data.edge_index, layer=layer)


def train(model, graphs, epochs: int) -> None:
    loader = DataLoader(graphs, batch_size=32, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for batch in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(batch), batch.y)
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.num_graphs
        print(f'epoch {epoch}: training loss {total / len(graphs):.3f}')


def draw(G: nx.DiGraph, pixel: torch.Tensor, intensity: torch.Tensor) -> bytes:
    pos = {i: (int(p) % 8, -(int(p) // 8)) for i, p in enumerate(pixel)}  # column right, row down
    edges = [(j, i) for j, i in G.edges if j != i]
    widths = [4.0 * G[j][i]['weight'] for j, i in edges]
    fig, ax = plt.subplots(figsize=(5, 5))
    nx.draw_networkx_nodes(G, pos, ax=ax, node_size=80, node_color=intensity.tolist(), cmap='Greys',
                           edgecolors='k', linewidths=0.5)
    nx.draw_networkx_edges(G, pos, edgelist=edges, ax=ax, width=widths, edge_color='tab:blue', alpha=0.7,
                           arrowsize=7, connectionstyle='arc3,rad=0.15')
    ax.set_title(f"digit {G.graph['label']} (predicted {G.graph['prediction']}): layer {G.graph['layer']}, "
                 f"top {G.graph['k']} incoming edges per pixel", fontsize=9)
    ax.axis('off')
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
    plt.close(fig)
    return buf.getvalue()


def write(path: Path, data: bytes) -> None:
    """Write through a temporary file and ``os.replace``, so a reader never sees half a file."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    graphs = digit_graphs(args.graphs, seed=args.seed)
    model = Classifier(17, args.hidden, 10, layers=args.layers, heads=args.heads)
    train(model, graphs, args.epochs)

    model.eval()
    graph = graphs[args.index]
    attention = model.attention_graph(graph, layer=args.layer)  # AttentionGraph: weight [E, heads]
    sparse = attention.topk(args.k, head=args.head)
    G = sparse.to_networkx(head=args.head)  # edge j -> i with 'weight' and 'head0', 'head1', ...
    with torch.no_grad():
        prediction = int(model(Batch.from_data_list([graph])).argmax())
    G.graph.update(label=int(graph.y), prediction=prediction, layer=args.layer % args.layers, k=args.k,
                   head='mean' if args.head is None else args.head)
    print(f'{attention} -> top {args.k}: {sparse.num_edges} edges')

    out.mkdir(parents=True, exist_ok=True)
    write(out / MANIFEST, ('\n'.join(OUTPUTS) + '\n').encode())
    write(out / OUTPUTS[0], '\n'.join(nx.generate_graphml(G)).encode())
    write(out / OUTPUTS[1], draw(G, graph.pixel, graph.x[:, 0]))
    print(f'wrote {out / OUTPUTS[0]} and {out / OUTPUTS[1]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
