"""SQL rules engine (EMQX dialect): parser, compiler, functions, runtime."""
