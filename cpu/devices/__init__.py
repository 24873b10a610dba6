"""Standard PC devices at their usual ports, written against cpu.board.BoardContext."""
