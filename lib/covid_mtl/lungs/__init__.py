"""Finding the lungs in a CT: the body, the air inside it, the 3D components that are lung, right and left."""
