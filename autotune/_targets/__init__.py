"""What to compile for: the Target interface and one module per kind of target
(local device, described GPU, Cloud TPU slice)."""
