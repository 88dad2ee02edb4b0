print("opacity")
