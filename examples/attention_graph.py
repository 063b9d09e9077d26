"""Train a small Laplacian transformer, take one layer's attention as a graph, sparsify it and export it.

scikit-learn's 8x8 digits become graphs (ink pixels as nodes, 8-neighbour pixel edges; offline), a
``build_model('laplacian', ...)`` classifier trains for a few epochs, and the attention of one block on one digit
becomes an :class:`pyg_ple.AttentionGraph`. ``topk`` keeps every pixel's strongest incoming edges; the result is
written as GraphML (readable by networkx, Gephi, Cytoscape) and drawn on the pixel grid::

    python examples/attention_graph.py                       # about 10 s on one core
    python examples/attention_graph.py --epochs 1 --graphs 60 --out runs/attention_graph

Files: ``<out>/attention_graph.graphml`` and ``<out>/attention_graph.png``. The script refuses to replace a file in
``--out`` that it did not write itself (it lists what it wrote in ``<out>/.attention_graph_files``).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib
import networkx as nx
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from pyg_ple.bench.datasets import digits_graphs
from pyg_ple.bench.io import atomic_write_bytes, atomic_write_text
from pyg_ple.bench.models import build_model

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
    if not 0 <= args.index < args.graphs or args.k < 1 or args.epochs < 0:
        p.error('--index must be below --graphs, --k positive and --epochs non-negative')
    foreign = foreign_outputs(Path(args.out))
    if foreign:
        p.error(f'{args.out} already holds {", ".join(foreign)}, which this script did not write; choose another --out')
    return args


def foreign_outputs(out: Path) -> list[str]:
    """The output names that ``out`` already holds and this script did not write."""
    manifest = out / MANIFEST
    mine = set(manifest.read_text().split()) if manifest.exists() else set()
    return [name for name in OUTPUTS if (out / name).exists() and name not in mine]


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


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    data = digits_graphs(args.graphs, seed=args.seed)
    model = build_model('laplacian', data.num_features, data.num_classes, hidden=args.hidden,
                        num_layers=args.layers, heads=args.heads, dropout=0.0)
    train(model, data.graphs, args.epochs)

    model.eval()
    graph = data.graphs[args.index]
    attention = model.attention_graph(graph, layer=args.layer)  # AttentionGraph: weight [E, heads]
    sparse = attention.topk(args.k, head=args.head)
    G = sparse.to_networkx(head=args.head)  # edge j -> i with 'weight' and 'head0', 'head1', ...
    with torch.no_grad():
        prediction = int(model(Batch.from_data_list([graph])).argmax())
    G.graph.update(label=int(graph.y), prediction=prediction, layer=args.layer % args.layers, k=args.k,
                   head='mean' if args.head is None else args.head)
    print(f'{attention} -> top {args.k}: {sparse.num_edges} edges')

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MANIFEST, '\n'.join(OUTPUTS) + '\n')
    atomic_write_text(out / OUTPUTS[0], '\n'.join(nx.generate_graphml(G)))
    atomic_write_bytes(out / OUTPUTS[1], draw(G, graph.pixel, graph.x[:, 0]))
    print(f'wrote {out / OUTPUTS[0]} and {out / OUTPUTS[1]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
