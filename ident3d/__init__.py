"""ident3d: render, store, load, train on and score 3DIdent-style identifiability benchmarks.

Data flows one way: latents -> render -> store -> data -> train -> eval. The pure parts
(latents, store, data, losses, models, train, metrics, eval) import without Blender; only
``ident3d.blender`` (the ``blender/`` folder of the source tree) imports ``bpy``.
"""

__version__ = "0.1.0"
