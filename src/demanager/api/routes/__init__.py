"""Route modules; each is thin: parse, one service call, present."""
