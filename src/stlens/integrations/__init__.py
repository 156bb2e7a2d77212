"""stlens inside the training loops researchers already use: the static/dynamic bias tracked every N steps.

- ``stlens.integrations.lightning.BiasCallback``: a PyTorch Lightning ``Callback``
  (``pip install 'stlens[lightning]'``)
- ``stlens.integrations.hf.BiasCallback``: a Hugging Face ``transformers.TrainerCallback``
  (``pip install 'stlens[hf]'``)

Both measure the video model being trained on fixed pairs (made as ``stlens track`` makes them), in eval mode, without
gradients, in fp32, on rank 0, and give the training modes back; they log ``stlens/<layer>/dynamic`` … to TensorBoard
and write a ``stlens track`` folder (``stlens report`` shows the curve). Their percentages at step s equal those
``stlens track`` computes from the checkpoint saved at step s (docs/tracking.md, "Inside your training loop").

Nothing here is imported by ``import stlens``; each module imports its framework when it is imported.
"""
