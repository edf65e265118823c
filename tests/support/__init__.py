"""Test helpers shared by integration and e2e tests: the npm OpenID Provider and Chromium."""
