"""A synthetic fine-grained action dataset: rendered dives of an articulated figure with exact 2D poses.

Classes compose take-off x somersaults x twists x flight position (like Diving48's labels) and neighbouring
classes differ in a single factor, so telling them apart takes the motion, not the appearance. The generator is
deterministic (seeded) and fast; it is the default data of the demo. See :func:`make_synthetic`.
"""

from pevl.data.synthetic.motion import Factors, class_factors
from pevl.data.synthetic.writer import SYNTHETIC_VERSION, generate_clip, make_synthetic

__all__ = ["SYNTHETIC_VERSION", "Factors", "class_factors", "generate_clip", "make_synthetic"]
