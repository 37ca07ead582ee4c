"""The local backend: models loaded with mlx-lm and decoded in one engine thread
that owns MLX (batched generation, prompt cache, stops, tool-call parsing)."""
