"""Pure flow-log processing: formats, parsing, direction, aggregation, PCE CSV. No I/O."""
