r"""Attention graphs of Hugging Face transformers: BERT, GPT-2, ViT and the like in, one
:class:`~pyg_ple.AttentionGraph` per layer out.

:func:`attention_graphs` runs a ``transformers`` model with ``output_attentions=True`` and turns every layer's
attention probabilities ``[B, H, T, T]`` into an attention graph with :meth:`~pyg_ple.AttentionGraph.from_dense`
(token ``t`` of sequence ``b`` is node ``b*T + t``, an edge ``j -> i`` per pair of real tokens, padding isolated), on
which every graph tool works: the measures of :mod:`pyg_ple.analysis`, ``to_networkx``, ``to_data``, ``laplacian``.
:func:`load_pretrained` reads a local model folder (no network, no code from the folder). This is what
``pyg-ple graph --hf PATH --text "..."`` runs.

Needs the optional ``transformers`` package (``pip install 'pyg-ple[hf]'``), imported only when a function here is
called.
"""
from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from pyg_ple.graph import AttentionGraph

__all__ = ['attention_graphs', 'load_pretrained', 'export_files', 'draw_sequence_attention', 'summary_table']

INSTALL_HINT = "pip install 'pyg-ple[hf]'"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f'pyg_ple.hf needs the transformers package, which is not installed: {INSTALL_HINT}') from e
    return transformers


def _set_attn_implementation(model: torch.nn.Module, name: str) -> None:
    if hasattr(model, 'set_attn_implementation'):  # transformers >= 4.48: also reaches sub-models' configs
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name


def attention_graphs(model: torch.nn.Module, tokenizer: Any = None, *, text: Union[str, Sequence[str], None] = None,
                     drop_zeros: bool = True, **inputs: Any) -> List[AttentionGraph]:
    r"""Run a Hugging Face model once and return the attention of every layer as an
    :class:`~pyg_ple.AttentionGraph`.

    Every layer's ``attentions[l]`` :math:`(B, H, T, T)` (query :math:`i`, key :math:`j`) becomes the graph
    of :meth:`~pyg_ple.AttentionGraph.from_dense` with the ``attention_mask`` of the inputs: an edge :math:`j \to i`
    for every pair of real tokens of one sequence with ``weight[e, h] = attentions[l][b, h, i, j]``; node
    :math:`bT + t` is token :math:`t` of sequence :math:`b`, a padded token an isolated node. A causal model (GPT-2)
    gives the pairs :math:`j \le i` only (``drop_zeros``).

    The model runs in evaluation mode (dropout off) under ``torch.no_grad()`` and is left as it was. Its SDPA or flash
    attention computes no weights, so a model that uses one is run with the eager attention (the same weights,
    computed explicitly) and a :class:`UserWarning` says so; load it with ``attn_implementation='eager'`` to avoid
    the switch.

    Args:
        model (transformers.PreTrainedModel): an encoder or decoder whose output has ``attentions`` (for an
            encoder-decoder model, pass ``model.get_encoder()``).
        tokenizer (transformers.PreTrainedTokenizerBase, optional): attaches the token strings of ``input_ids`` to
            the graphs (``AttentionGraph.tokens``), and tokenizes ``text``. (default: :obj:`None`)
        text (str or List[str], optional): text to tokenize with ``tokenizer`` (several texts are padded to one
            length). (default: :obj:`None`)
        drop_zeros (bool, optional): leave out pairs whose weight is exactly zero in every head.
            (default: :obj:`True`)
        **inputs: the model's inputs (``input_ids``, ``attention_mask``, ``pixel_values``, ...), moved to the model's
            device.

    Returns:
        One :class:`~pyg_ple.AttentionGraph` per layer, first layer first, each with :math:`BT` nodes, ``weight``
        :math:`(E, H)` and ``batch`` :math:`(BT)`.
    """
    _transformers()
    if not isinstance(model, torch.nn.Module) or not hasattr(model, 'config'):
        raise TypeError(f"'model' must be a Hugging Face transformers model (got {type(model).__name__})")
    if text is not None:
        if tokenizer is None:
            raise TypeError("'text' needs a 'tokenizer' to turn it into input_ids")
        several = not isinstance(text, str)
        encoded = tokenizer(list(text) if several else text, return_tensors='pt', padding=several and len(text) > 1)
        clash = sorted(set(encoded) & set(inputs))
        if clash:
            raise TypeError(f"pass either 'text' or {', '.join(map(repr, clash))}, not both")
        inputs.update(encoded)
    if not inputs:
        raise TypeError("no model inputs: pass 'text' with a tokenizer, or input_ids=..., pixel_values=..., ...")
    ids = inputs.get('input_ids')
    if isinstance(ids, torch.Tensor):
        limit = getattr(model.config, 'max_position_embeddings', None) or getattr(model.config, 'n_positions', None)
        if ids.size(-1) == 0:
            raise ValueError("the inputs hold no token ('input_ids' is empty)")
        if isinstance(limit, int) and ids.size(-1) > limit:
            raise ValueError(f'the inputs have {ids.size(-1)} tokens; {type(model).__name__} reads at most {limit}')
    device = next(model.parameters(), torch.empty(0)).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

    impl = getattr(model.config, '_attn_implementation', None)
    switch = impl is not None and impl != 'eager'
    if switch:
        warnings.warn(f"{type(model).__name__} uses the {impl!r} attention, which returns no attention weights; it is "
                      "run with the eager attention instead (load it with attn_implementation='eager' to skip this)",
                      UserWarning, stacklevel=2)
        _set_attn_implementation(model, 'eager')
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(**inputs, output_attentions=True, return_dict=True)
    finally:
        model.train(training)
        if switch:
            _set_attn_implementation(model, impl)

    attentions = getattr(out, 'attentions', None)
    if attentions is None and getattr(out, 'encoder_attentions', None) is not None:
        raise ValueError(f'{type(model).__name__} is an encoder-decoder model: pass model.get_encoder() (or the '
                         'decoder) with its inputs')
    if not attentions or any(a is None for a in attentions):
        raise ValueError(f'{type(model).__name__} returned no attention weights with output_attentions=True')

    B, _, T, _ = attentions[0].shape
    mask = inputs.get('attention_mask')
    if mask is not None and tuple(mask.shape) != (B, T):
        raise ValueError(f"'attention_mask' must have shape [B, T] = {[B, T]}, one entry per token the attention "
                         f'runs over (got {list(mask.shape)})')
    tokens = None
    ids = inputs.get('input_ids')
    if tokenizer is not None and isinstance(ids, torch.Tensor) and tuple(ids.shape) == (B, T):
        tokens = [tok for row in ids.tolist() for tok in tokenizer.convert_ids_to_tokens(row)]
    return [AttentionGraph.from_dense(a, mask, drop_zeros=drop_zeros, tokens=tokens) for a in attentions]


def load_pretrained(path: Union[str, Path], tokenizer: bool = True) -> Tuple[torch.nn.Module, Any]:
    r"""Load a model (and its tokenizer) from a local Hugging Face model folder, as written by ``save_pretrained``.

    Nothing is downloaded (``local_files_only=True``) and no code from the folder runs (``trust_remote_code=False``;
    the weights are read from ``*.safetensors`` where the folder has them). The model is the base model of its
    ``config.json`` (``AutoModel``), with the eager attention, in evaluation mode.

    Args:
        path (str or pathlib.Path): the model folder (``config.json`` and the weights).
        tokenizer (bool, optional): also load the folder's tokenizer. (default: :obj:`True`)

    Returns:
        ``(model, tokenizer)``; ``tokenizer`` is ``None`` when not asked for or when the folder has none.

    Raises:
        ValueError: when ``path`` is not a readable model folder (the message says why).
    """
    transformers = _transformers()
    path = Path(path)
    if not path.exists():
        raise ValueError(f'no such folder {path}')
    if not path.is_dir():
        raise ValueError(f'{path} is a file, not a Hugging Face model folder (a folder with config.json and weights)')
    if not (path / 'config.json').is_file():
        raise ValueError(f'{path} is not a Hugging Face model folder: it has no config.json')
    safetensors = any(path.glob('*.safetensors'))
    if not safetensors and not any(path.glob('*.bin')):
        raise ValueError(f'{path} holds no model weights (model.safetensors)')
    logging = transformers.utils.logging
    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
            model = transformers.AutoModel.from_pretrained(
                path, config=config, local_files_only=True, trust_remote_code=False,
                use_safetensors=True if safetensors else None, attn_implementation='eager')
        except Exception as e:  # noqa: BLE001 -- whatever the folder's files make transformers raise, it is bad input
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f'{path} cannot be loaded as a Hugging Face model: {reason}') from None
        tok = None
        if tokenizer:
            try:
                tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
            except (OSError, ValueError, KeyError, TypeError):
                tok = None
    finally:
        if bar:
            logging.enable_progress_bar()
    return model.eval(), tok


def draw_sequence_attention(G: Any, min_weight: float = 0.0, title: str = '') -> bytes:
    r"""PNG bytes of the attention graph ``G`` of one sequence (from :meth:`~pyg_ple.AttentionGraph.to_networkx`)
    as an arc diagram: the tokens on a line in order, an arc per edge ``j -> i`` with width and opacity by
    ``weight``; arcs above the line attend to earlier tokens (``j < i``), below to later ones. Self-loops and edges of
    weight up to ``min_weight`` are left out. Needs matplotlib."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Arc

    nodes = sorted(G.nodes)
    x = {n: k for k, n in enumerate(nodes)}
    labels = [str(G.nodes[n].get('token', n)) for n in nodes]
    edges = [(j, i, w) for j, i, w in G.edges(data='weight') if j != i and w > min_weight]
    wmax = max((w for *_, w in edges), default=1.0) or 1.0
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(nodes)), 3.5))
    for j, i, w in edges:
        a, b = x[j], x[i]
        width = abs(a - b)
        ax.add_patch(Arc(((a + b) / 2, 0), width, width, theta1=0 if a < b else 180, theta2=180 if a < b else 360,
                         lw=0.3 + 3.0 * w / wmax, alpha=0.15 + 0.75 * w / wmax,
                         color='tab:blue' if a < b else 'tab:orange'))
    ax.scatter(range(len(nodes)), [0] * len(nodes), s=25, c='k', zorder=3)
    ax.set_xticks(range(len(nodes)), labels, rotation=60, fontsize=8)
    span = max(len(nodes) - 1, 1)
    ax.set_xlim(-0.7, span + 0.7)
    ax.set_ylim(-span / 2 - 0.3, span / 2 + 0.3)
    ax.set_yticks([])
    for side in ('left', 'right', 'top'):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110)
    plt.close(fig)
    return buf.getvalue()


def export_files(graphs: Sequence[AttentionGraph], stem: str, head: Optional[int] = None,
                 layers: Optional[Sequence[int]] = None, min_weight: float = 0.0,
                 graph_attrs: Optional[Dict[str, Any]] = None) -> Dict[str, bytes]:
    r"""The files ``pyg-ple graph --hf`` writes for one sequence, by name: per layer ``<stem>_l<layer>_h<head>``
    ``.graphml`` (networkx GraphML: nodes with ``token`` and ``position``, edges with ``weight`` and ``head0``, ...)
    and ``.png`` (:func:`draw_sequence_attention`), and ``<stem>_summary.csv`` / ``.md``, the
    :func:`~pyg_ple.analysis.attention_summary` of all layers (entropy, distance, spectral gap per layer and head).

    Args:
        graphs (Sequence[AttentionGraph]): one graph per layer (of one sequence, or the first of a batch is used).
        stem (str): the file name prefix.
        head (int, optional): the head whose weight is ``weight`` and drawn. (default: :obj:`None`: the mean)
        layers (Sequence[int], optional): the layers to export as GraphML and PNG. (default: :obj:`None`: all)
        min_weight (float, optional): edges drawn above this weight only. (default: :obj:`0.0`)
        graph_attrs (Dict[str, Any], optional): graph attributes of every GraphML file (scalars).
            (default: :obj:`None`)
    """
    import networkx as nx

    from pyg_ple.analysis import attention_summary

    graphs = [g.graph(0) if g.batch is not None else g for g in graphs]
    layers = list(range(len(graphs))) if layers is None else list(layers)
    bad = [layer for layer in layers if not isinstance(layer, int) or not 0 <= layer < len(graphs)]
    if bad:
        raise ValueError(f"'layers' must be layer indices in [0, {len(graphs)}) (got {bad})")
    files: Dict[str, bytes] = {}
    head_name = 'mean' if head is None else str(head)
    for layer in layers:
        G = graphs[layer].to_networkx(head=head)
        for n in G.nodes:
            G.nodes[n]['position'] = n
        G.graph.update(graph_attrs or {})
        G.graph.update(layer=layer, head='mean' if head is None else head)
        name = f'{stem}_l{layer}_h{head_name}'
        buf = io.BytesIO()
        nx.write_graphml(G, buf)
        files[f'{name}.graphml'] = buf.getvalue()
        files[f'{name}.png'] = draw_sequence_attention(
            G, min_weight, f'{stem}: layer {layer}, head {head_name} (arcs above: to earlier tokens, below: to later)')
    rows = attention_summary(graphs)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=['layer', 'head', 'entropy', 'distance', 'spectral_gap'],
                            lineterminator='\n')
    writer.writeheader()
    writer.writerows({**r, **{k: f'{r[k]:.6g}' for k in ('entropy', 'distance', 'spectral_gap')}} for r in rows)
    files[f'{stem}_summary.csv'] = text.getvalue().encode()
    files[f'{stem}_summary.md'] = summary_table(rows).encode()
    return files


def summary_table(rows: Sequence[Dict[str, float]]) -> str:
    r"""A Markdown table of :func:`~pyg_ple.analysis.attention_summary` rows."""
    lines = ['| layer | head | entropy (nats) | distance (tokens) | spectral gap |', '|---:|---:|---:|---:|---:|']
    lines += [f"| {r['layer']} | {r['head']} | {r['entropy']:.3f} | {r['distance']:.3f} | {r['spectral_gap']:.3f} |"
              for r in rows]
    return '\n'.join(lines) + '\n'
