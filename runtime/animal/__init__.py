"""Animal (pet) animation: X-Pose finds the animal's face points, the source is cropped on them, and the animal
networks (the human architecture with other weights) animate it with absolute driving rotation and a motion
multiplier from the keypoint hulls, as upstream's `live_portrait_pipeline_animal.py` does.

Modules: resize (Pillow-equivalent bilinear resize), xpose (X-Pose input, output and the no-animal rule),
crop (the source crop from the 9 or 68 points), motion (the animal motion rule), animator (the animal flow on top of
runtime.pipeline's Animator).
"""
