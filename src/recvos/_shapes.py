"""The shape grammar used in every docstring and annotation of recvos.

B batch, T time (frames), O objects (slots), C channels, H and W height and width.
A stride suffix names the resolution of a feature map relative to the input:
``f4`` is H/4 x W/4, ``f8``, ``f16``, ``f32`` likewise.

Conventions
-----------
- Frames given to models are float RGB in [0, 1], shape [B, 3, H, W] (the model normalises them for its
  backbone itself). Frames from frame sources are uint8 RGB numpy arrays [H, W, 3].
- Object-id maps are integer numpy arrays [H, W]: 0 is background, 1..K are objects (any positive ints
  are allowed at the API boundary and mapped to slots internally).
- Per-object masks given to models are float {0, 1} (or soft) tensors [B, O, H, W]; logits likewise.
- Objectness is a probability in [0, 1], shape [B, O].
"""
