"""recvos.data: frame sources, mask I/O, datasets, clip sampling, joint transforms and synthetic clips.

Submodules (import them directly; importing this package loads nothing else):

- :mod:`recvos.data.frames`: ``FrameSource``, ``FolderFrames``, ``VideoFrames``, ``open_frames``.
- :mod:`recvos.data.masks`: ``DAVIS_PALETTE``, ``read_mask``, ``write_mask``, ``ids_to_onehot``,
  ``onehot_to_ids``.
- :mod:`recvos.data.datasets`: ``VideoSequence``, ``VOSDataset``, ``DAVIS2016``, ``DAVIS2017``, ``YouTubeVOS``,
  ``FolderDataset``, ``open_dataset``.
- :mod:`recvos.data.synthetic`: ``synthetic_clip``, ``write_synthetic_dataset``, ``write_synthetic_video``.
"""
