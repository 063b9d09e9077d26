"""The options of the ``pyg-ple`` sub-commands (see :mod:`pyg_ple.bench.cli`) and the defaults of ``pyg-ple bench``."""
from __future__ import annotations

import argparse
from typing import Callable

from pyg_ple.bench.io import MANIFEST_NAME
from pyg_ple.nn.scaler import DEGREE_SCALERS, check_degree_scaler

DEFAULT_TU_MODELS = 'gcn,gat,gin,gps,transformer,laplacian,mixed'
DEFAULT_DIGITS_MODELS = 'gcn,gat,gin,transformer,laplacian,mixed,laplacian-tokens'
# The offline default: a stratified subset of the digits, sized to finish in a few minutes on 2 cores.
DIGITS_DEFAULTS = dict(digits_n=300, epochs=10, hidden=32, layers=2, batch_size=16, lr=3e-3, patience=None,
                       node_attr=False, final_runs=1)
# On TU datasets, the settings of the graph table (benchmarks/results/graph_classification.md), so that
# `pyg-ple bench --dataset NAME` with no other option reproduces its row.
TU_DEFAULTS = dict(epochs=100, hidden=32, layers=3, batch_size=32, lr=3e-3, patience=20, node_attr=False,
                   final_runs=1)
TU_DATASET_DEFAULTS = {
    # Width 32 on MUTAG failed its screen (benchmarks/screening_log.md#edge_values).
    'MUTAG': dict(hidden=64),
    # The 3 node labels and 18 continuous attributes, as Errica et al.; at 100 epochs the budget rather than early
    # stopping ended most baseline runs (benchmarks/screening_log.md#budget).
    'ENZYMES': dict(node_attr=True, epochs=200, patience=30),
    # Width 32 or 16, chosen per outer fold on validation: 16 raised the Laplacian transformer's validation accuracy on
    # six split seeds and lowered GAT's, GIN's and ple-gps's (benchmarks/screening_log.md#width_choice_nci1).
    'NCI1': dict(hidden=(32, 16)),
}
NO_PATIENCE = 'none'  # `--patience none`: no early stopping on any dataset


def bench_defaults(dataset: str) -> dict:
    """The settings ``pyg-ple bench --dataset DATASET`` uses for the options not given: epochs, batch_size, lr,
    patience, hidden, layers, node_attr (and digits_n on the digits)."""
    if dataset.lower() == 'digits':
        return dict(DIGITS_DEFAULTS)
    from pyg_ple.bench.tasks import dataset_spec
    if dataset_spec(dataset).split == 'fixed':  # peptides-func, hiv: the budget of benchmarks/long_range_plan.md
        from pyg_ple.bench.fixed_split import FIXED_SPLIT_DEFAULTS
        return dict(FIXED_SPLIT_DEFAULTS)
    return {**TU_DEFAULTS, **TU_DATASET_DEFAULTS.get(dataset.upper(), {})}


def patience_arg(text: str) -> int | str:
    """``--patience N`` or ``--patience none``."""
    if text.lower() == NO_PATIENCE:
        return NO_PATIENCE
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value: {text!r} (an integer >= 1, or 'none')") from None



def widths_arg(text: str) -> int | tuple[int, ...]:
    """``--hidden 32`` (one width) or ``--hidden 32,16`` (widths chosen per fold on validation, ties to the first)."""
    try:
        widths = tuple(int(part) for part in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'invalid value: {text!r} (a width, or widths separated by commas to choose from: 32,16)') from None
    if len(widths) == 1:
        return widths[0]  # checked with the model's other settings
    if any(w < 1 for w in widths) or len(set(widths)) < len(widths):
        raise argparse.ArgumentTypeError(f'invalid value: {text!r} (widths >= 1, each once)')
    return widths


def degree_scaler_form(text: str) -> bool | str:
    """``--degree-scaler FORM``: ``log`` (stored as ``True``, as ``degree_scaler=True`` spells it) or ``linear``."""
    try:
        return check_degree_scaler(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(map(repr, DEGREE_SCALERS))})") from None


def default_models(digits: bool) -> str:
    """The comma-separated models ``pyg-ple bench`` runs without ``--models``."""
    return DEFAULT_DIGITS_MODELS if digits else DEFAULT_TU_MODELS


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help states its default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or 'default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def add_bench(sub: argparse._SubParsersAction, func: Callable[[argparse.Namespace], int]) -> None:
    """The ``bench`` sub-command and its options; ``func`` runs it."""
    from pyg_ple.bench.models import ATTENTION_EDGE_SETS, POOL_CHOICES, READOUT_LAYERS
    from pyg_ple.bench.settings import SELECTION_RULES
    from pyg_ple.bench.training import OPTIMIZERS
    from pyg_ple.nn.block import NORMS
    p = sub.add_parser(
        'bench', help='graph classification benchmark (Errica et al. protocol)',
        description='Graph classification under the protocol of Errica et al. (2020): stratified k-fold outer CV, a '
                    'stratified 10% validation split inside each training fold for model selection over --grid, '
                    'test accuracy of the selected model per fold, mean +- std. With no options: scikit-learn digits '
                    'as graphs, offline, a few minutes on 2 CPU cores.',
        formatter_class=_HelpFormatter)
    p.add_argument('--dataset', default='digits',
                   help="'digits' (offline, ships with scikit-learn), a TU dataset name (MUTAG, PROTEINS, ...), or "
                        "'peptides-func' or 'hiv' (fixed official splits, several seeds; needs pip install "
                        "'pyg-ple[mol]' and their files under --root)")
    p.add_argument('--models', default=None,
                   help=f'comma-separated model names (default: {DEFAULT_DIGITS_MODELS} on digits, '
                        f'{DEFAULT_TU_MODELS} on TU datasets); see pyg_ple.bench.models.MODEL_NAMES')
    p.add_argument('--folds', type=int, default=10,
                   help='outer cross-validation folds (2 to the size of the smallest class)')
    p.add_argument('--epochs', type=int, default=None,
                   help=f'epochs per training run (default {DIGITS_DEFAULTS["epochs"]} on digits, '
                        f'{TU_DEFAULTS["epochs"]} on TU, {TU_DATASET_DEFAULTS["ENZYMES"]["epochs"]} on ENZYMES)')
    p.add_argument('--root', default=None,
                   help='data folder with <NAME>/raw or TUDataset/<NAME>/raw (default: $PYG_PLE_DATA, else '
                        '~/.cache/pyg_ple, where PyG downloads as usual)')
    p.add_argument('--out', default=None,
                   help='output folder: new, empty, or an earlier run to --resume or --overwrite (default: '
                        'runs/<dataset>)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cpu')
    again = p.add_mutually_exclusive_group()
    again.add_argument('--resume', action='store_true',
                       help='continue the run in --out: finished folds are kept, an interrupted training run '
                            'continues from its last checkpoint')
    again.add_argument('--overwrite', action='store_true',
                       help=f'replace the run in --out: delete the files it wrote (listed in {MANIFEST_NAME}) and '
                            'start afresh; files pyg-ple did not write stay')
    p.add_argument('--grid', default=None,
                   help='model-selection grid, as JSON or a JSON file: {"lr": [1e-3, 1e-4], "hidden": [32, 64]} (all '
                        'combinations) or a list of configurations; keys lr, weight_decay, batch_size, patience, '
                        'grad_clip, optimizer, schedule, warmup_epochs, decay_every, decay_gamma, ema_decay set '
                        'training, the model hyper-parameters (hidden, num_layers, heads, dropout, ...) the model '
                        '(default: one configuration)')
    p.add_argument('--batch-size', type=int, default=None,
                   help=f'default {DIGITS_DEFAULTS["batch_size"]} on digits, {TU_DEFAULTS["batch_size"]} on TU')
    p.add_argument('--lr', type=float, default=None, help=f'learning rate (default {TU_DEFAULTS["lr"]:g})')
    p.add_argument('--weight-decay', type=float, default=0.0)
    p.add_argument('--patience', type=patience_arg, default=None,
                   help='early stopping after this many epochs without a better validation score, or none '
                        f'(default: none on digits, {TU_DEFAULTS["patience"]} on TU, '
                        f'{TU_DATASET_DEFAULTS["ENZYMES"]["patience"]} on ENZYMES)')
    p.add_argument('--select', default='acc', choices=SELECTION_RULES,
                   help="what keeps an epoch and a --grid configuration: 'acc' the best validation accuracy, ties "
                        "broken by the lower loss (Errica et al.), 'loss' the lowest validation loss; early stopping "
                        'counts epochs without a better one')
    p.add_argument('--final-runs', type=int, default=None,
                   help='training runs of the selected configuration per fold, their test accuracies averaged (Errica '
                        'et al.: 3); on peptides-func and hiv the seeds of every model; resuming a finished run with '
                        'more adds the missing ones (default 1; 3 on peptides-func and hiv)')
    p.add_argument('--params', type=int, default=None, metavar='N',
                   help='peptides-func and hiv: each model\'s width (a multiple of --heads) chosen so that its '
                        'parameter count is the closest to N, every count within 10%% of N (instead of --hidden)')
    p.add_argument('--inner-splits', type=int, default=1,
                   help='validation splits per training fold: every grid configuration is trained once on each and '
                        'selected by its mean validation score; the fold\'s test accuracy is the mean of its runs '
                        '(default 1; excludes --final-runs)')
    p.add_argument('--optimizer', default='adam', choices=OPTIMIZERS, help='optimiser of every model')
    p.add_argument('--schedule', default='none', choices=['none', 'cosine', 'step'],
                   help="learning-rate schedule, stepped per epoch: 'cosine' (after --warmup-epochs of linear "
                        "warm-up) or 'step' (times --decay-gamma every --decay-every epochs)")
    p.add_argument('--warmup-epochs', type=int, default=0, help='linear warm-up epochs of --schedule cosine')
    p.add_argument('--decay-every', type=int, default=50, help='epochs between decays of --schedule step')
    p.add_argument('--decay-gamma', type=float, default=0.5, help='factor of each decay of --schedule step')
    p.add_argument('--grad-clip', type=float, default=None, help='clip the gradient norm (default: no clipping)')
    p.add_argument('--ema-decay', type=float, default=None,
                   help='evaluate, select and keep an exponential moving average of the weights, updated every step '
                        'with this decay, e.g. 0.99 (default: the weights themselves)')
    p.add_argument('--hidden', type=widths_arg, default=None, metavar='WIDTH[,WIDTH...]',
                   help='hidden width, or several chosen per outer fold on validation like a --grid over "hidden" '
                        '(ties: the first; a --grid configuration that sets "hidden" keeps its own) (default '
                        f'{TU_DEFAULTS["hidden"]}; {TU_DATASET_DEFAULTS["MUTAG"]["hidden"]} on MUTAG, '
                        f'{",".join(map(str, TU_DATASET_DEFAULTS["NCI1"]["hidden"]))} on NCI1)')
    p.add_argument('--layers', type=int, default=None,
                   help=f'number of layers (default {DIGITS_DEFAULTS["layers"]} on digits, {TU_DEFAULTS["layers"]} '
                        'on TU)')
    p.add_argument('--heads', type=int, default=4, help='attention heads (a divisor of --hidden)')
    p.add_argument('--dropout', type=float, default=0.1)
    p.add_argument('--pool', default='mean+sum', choices=POOL_CHOICES,
                   help="graph readout; 'mean+sum' concatenates both (not the token models)")
    p.add_argument('--readout-layers', default='last', choices=READOUT_LAYERS,
                   help="pool the last layer ('last'), or the input and every layer, concatenated as GIN's "
                        "readout ('all'; not the token models)")
    p.add_argument('--attention', default='native', choices=ATTENTION_EDGE_SETS,
                   help='what the transformer blocks attend over')
    p.add_argument('--step-size', type=float, default=1.0, help='Laplacian step size eta')
    p.add_argument('--learn-step-size', action='store_true')
    p.add_argument('--ple-init', action='store_true',
                   help='transformer blocks start as the diffusion step: W_v = W_o = I (pyg_ple.nn.block.ple_init_)')
    p.add_argument('--uniform-init', action='store_true',
                   help='the attention of the transformer blocks starts uniform over each node\'s keys (W_q = 0): '
                        'a Laplacian head starts as the random-walk Laplacian of the graph (not with --ple-init)')
    p.add_argument('--norm', default='batch', choices=tuple(NORMS),
                   help='normalisation layers of the transformer blocks')
    p.add_argument('--postnorm', dest='prenorm', action='store_false', default=False,
                   help='post-norm residuals in the transformer blocks, as GPS and GRIT (the default)')
    p.add_argument('--prenorm', dest='prenorm', action='store_true',
                   help='pre-norm residuals in the transformer blocks, as in language models')
    p.add_argument('--degree-scaler', nargs='?', const=True, default=True, type=degree_scaler_form,
                   metavar='{' + ','.join(DEGREE_SCALERS) + '}',
                   help='learned degree-dependent conductance s(d_i) = theta_1 + theta_2 g(d_i) in the attention '
                        '(transformers, ple-gps): g(d) = log(1 + d) (log, the default) or d (linear)')
    p.add_argument('--no-degree-scaler', dest='degree_scaler', action='store_false', help='no degree scaler')
    p.add_argument('--share-weights', action='store_true',
                   help='the transformer blocks share one attention, projection and MLP (one PLE step applied '
                        '--layers times; each block keeps its norms)')
    p.add_argument('--encoder-norm', action='store_true',
                   help='LayerNorm after the node encoder of the transformer models (residual stream on LN scale)')
    p.add_argument('--node-attr', action=argparse.BooleanOptionalAction, default=None,
                   help='TU datasets: use the continuous node attributes as well as the node labels (ENZYMES: 3 + 18, '
                        'as Errica et al.); adds a BatchNorm on the raw features of every model (input_norm) '
                        '(default: on for ENZYMES)')
    p.add_argument('--degree', action='store_true',
                   help='TU datasets with node features: append the one-hot node degree to them')
    p.add_argument('--edge-features', action=argparse.BooleanOptionalAction, default=None,
                   help='TU datasets with edge labels (MUTAG, PTC: bond types): keep them as edge_attr and feed them '
                        'to the models that take edge features (transformers, GAT, GIN, GPS, ple-gps) (default: on '
                        'when the dataset has edge labels and --attention is not full)')
    p.add_argument('--edge-values', action='store_true',
                   help='the transformers add the edge features to their values as well as to their attention '
                        'scores, as GINE adds them to its messages (needs edge features)')
    p.add_argument('--pe', default='rw', choices=['none', 'rw', 'lap'],
                   help='positional encoding of every model: random-walk return probabilities (rw) or Laplacian '
                        'eigenvectors (lap), --pe-dim of them')
    p.add_argument('--pe-dim', type=int, default=8)
    p.add_argument('--digits-n', type=int, default=None,
                   help=f'digits: stratified subset size (default {DIGITS_DEFAULTS["digits_n"]}; 0 = all 1797)')
    p.add_argument('--checkpoint-every', type=int, default=5, help='epochs between training checkpoints')
    p.add_argument('--no-save-models', action='store_true', help='do not keep the selected model of each fold')
    p.add_argument('--threads', type=int, default=None,
                   help='torch intra-op threads per process (default: 1; more were slower on graph batches, '
                        'benchmarks/results/threads.md)')
    p.add_argument('--no-progress', action='store_true')
    p.set_defaults(func=func, parser=p)


def add_graph(sub: argparse._SubParsersAction, func: Callable[[argparse.Namespace], int]) -> None:
    """The ``graph`` sub-command and its options; ``func`` runs it."""
    p = sub.add_parser(
        'graph', help='export the attention graph of a trained model (GraphML + PNG)',
        description='Load a model saved by `pyg-ple bench` (<out>/models/<model>_fold<k>.pt), run it on one graph of '
                    'its dataset and export the attention graph of one layer and head: GraphML (networkx) and a PNG '
                    'drawing with edge widths by attention weight. With --hf PATH --text "...": run a local Hugging '
                    'Face model folder (nothing downloaded, no code from the folder run; needs pip install '
                    '"pyg-ple[hf]") on the text and export every layer (GraphML + PNG) and a summary table of '
                    'attention entropy, distance and spectral gap per layer and head.',
        formatter_class=_HelpFormatter)
    p.add_argument('checkpoint', nargs='?', default=None, help='model file written by pyg-ple bench (or use --hf)')
    p.add_argument('--hf', default=None, metavar='PATH',
                   help='a local Hugging Face model folder (config.json, weights, tokenizer) instead of a checkpoint')
    p.add_argument('--text', default=None, help='with --hf: the text the model reads')
    p.add_argument('--index', type=int, default=None, help='graph index in the dataset (default: first test graph)')
    p.add_argument('--layer', type=int, default=None,
                   help='block whose attention is exported (negative: from the end; default: 0, with --hf every block)')
    p.add_argument('--head', type=int, default=None, help='head (default: mean over heads)')
    p.add_argument('--root', default=None, help='data folder (as for bench)')
    p.add_argument('--out', default=None,
                   help='output folder, new, empty or written by pyg-ple (default: <run>/attention next to the '
                        'models/ folder of the checkpoint; required with --hf)')
    p.add_argument('--min-weight', type=float, default=0.0, help='drop edges below this weight in the drawing')
    p.set_defaults(func=func, parser=p)
