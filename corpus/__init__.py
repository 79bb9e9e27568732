"""Texts both sides use: the load tools' request profiles, and the default calibration texts of an int8 export."""
