"""The ladder: states, allowed moves and the pure decision logic of one supervised target."""
