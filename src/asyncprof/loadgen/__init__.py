"""Code that runs inside the Locust process (never imported by asyncprof itself: gevent patches the world)."""
