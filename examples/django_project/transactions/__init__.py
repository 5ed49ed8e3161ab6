"""Transactions followed by trackers: the views and the tracker."""
