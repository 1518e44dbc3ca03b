"""coinfer — the library of the *Spears & Shields* course.

Device–edge co-inference (Wu, Ye, Zhang, Yu 2021): how an eavesdropper reconstructs a vehicle's
camera images from the features it shares (the *spear*), how a differential-privacy defence
blunts that (the *shield*), and how a service provider pays vehicles to accept the privacy risk
(a Stackelberg game).  One module per concept of the book.
"""

__version__ = "0.1.0"
