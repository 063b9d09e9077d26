"""torchrun worker of tests/test_distributed.py: ``torchrun --standalone --nproc_per_node=2 dist_worker.py OUT``."""
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import torch  # noqa: E402

import dist_common as dc  # noqa: E402
from pyg_ple.bench.distributed import (cleanup, distributed_loader, init_distributed, is_main_process,  # noqa: E402
                                       unwrap_model, wrap_model)
from pyg_ple.bench.training import TrainConfig, fit  # noqa: E402

torch.set_num_threads(1)
out = Path(sys.argv[1])
info = init_distributed()
assert info.world_size == dc.WORLD and info.backend == 'gloo', info
data = dc.make_dataset()
loader = distributed_loader(data, batch_size=dc.BATCH, shuffle=True, seed=dc.SEED)
model = wrap_model(dc.make_model(), info)
config = TrainConfig(epochs=dc.EPOCHS, lr=dc.LR, seed=dc.SEED, progress=False, checkpoint_path=out / 'ckpt.pt')
result = fit(model, loader, config, dc.loss_fn, evaluate=lambda m: dc.eval_metrics(m, data),
             optimizer=dc.make_optimizer(model))
torch.save(unwrap_model(model).state_dict(), out / f'params_rank{info.rank}.pt')
if is_main_process():
    (out / 'history.json').write_text(json.dumps(result.history))
(out / f'wrote_rank{info.rank}.txt').write_text(str(sorted(os.listdir(out))))
cleanup()
