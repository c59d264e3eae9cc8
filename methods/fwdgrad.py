"""fwdgrad: the weight-perturbation forward gradient (Baydin et al. 2022), one forward-mode pass, no backward."""

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import functional_call

from bench import Method, Option
from bench.local import step_stats
from bench.measure.locality import Locality


class ForwardGradient(Method):
    """Every trainable parameter gets (grad L . v) v, v ~ N(0, I) drawn over all of them at once.

    L is the batch-mean cross-entropy; its directional derivative d = grad L . v comes from one
    forward-mode (dual-number) pass, and d v is the update: unbiased, since E[v v^T] = I, noisy, and
    with no backward pass [paper]. The loss and count logged are the same forward's primal output.
    [suite] v is drawn from the run's generator, parameter by parameter in `named_parameters`
    order, each in its logical shape (so a channels_last run draws the same v as a contiguous one).
    [suite] The pass is torch.autograd.forward_ad (the engine under torch.func.jvp) over
    torch.func.functional_call, with the model's buffers passed as they are: BatchNorm in train mode
    then updates its running statistics once, in place, as a normal forward does. torch.func.jvp
    refuses exactly that (in torch 2.14: "attempted to call in-place operation (aten::add_.Tensor)
    that would mutate a captured Tensor", BatchNorm's num_batches_tracked), and under CPU bf16
    autocast it also fails on every conv (input float, weight bf16).
    [suite] `directions` k > 1 averages k estimates, one forward each; only the first forward
    touches the BatchNorm statistics (the others run on copies), so they still move once a step.
    Under the trainer's bf16 autocast the forward runs in bf16, like every rule's: d is then the bf16
    network's directional derivative.
    """

    locality = Locality(transport="none", broadcast=True, locking="update", auxiliary=False)

    options = {
        "directions": Option(
            1, "random directions averaged per step (one forward-mode pass each)", minimum=1
        ),
    }

    def step(self, model, x, y):
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        updates = [None] * len(named)
        with torch.no_grad():  # no graph: the forward-mode pass is all there is
            for k in range(self.directions):
                tangents = [
                    torch.randn(p.shape, generator=self.generator, device=p.device, dtype=p.dtype)
                    for _, p in named
                ]
                copies = {} if k == 0 else {name: b.clone() for name, b in model.named_buffers()}
                loss_k, slope, logits_k = self._directional(model, named, tangents, copies, x, y)
                if k == 0:
                    loss, logits = loss_k, logits_k
                slope = slope.float() / self.directions
                for i, v in enumerate(tangents):
                    term = v.mul_(slope.to(v.dtype))
                    updates[i] = term if updates[i] is None else updates[i].add_(term)
        for (_, p), update in zip(named, updates):
            # In the parameter's own layout (NHWC conv weights of a channels_last model), as autograd's would be.
            p.grad = update if update.stride() == p.stride() else torch.empty_like(p).copy_(update)
        return step_stats(loss, logits, y)

    @staticmethod
    def _directional(model, named, tangents, buffers, x, y):
        """(L, dL/dt of L(theta + t v) at t = 0, logits): one train-mode forward on dual parameters.

        `buffers` replace the model's own where given (copies, so their in-place updates are lost).
        """
        with fwAD.dual_level():
            duals = {name: fwAD.make_dual(p.detach(), v) for (name, p), v in zip(named, tangents)}
            logits = functional_call(model, {**duals, **buffers}, (x,))
            loss, slope = fwAD.unpack_dual(F.cross_entropy(logits, y))
            return loss, slope, fwAD.unpack_dual(logits).primal
