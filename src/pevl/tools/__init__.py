"""Developer tools that sit on top of the models: parameter and FLOP profiling."""
