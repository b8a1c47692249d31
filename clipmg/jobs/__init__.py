"""Jobs built on the library: embed, prompt experiments and learning, the linear probe, comparisons of approaches, the demo."""
