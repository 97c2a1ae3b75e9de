"""Recipes, estimators, spatial cross-validation, prediction intervals, area of applicability."""
