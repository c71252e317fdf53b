"""Side effects on processes, behind small seams: spawning, adopting, signalling, inspecting."""
