"""`vad detect`: from a camera's normal footage and new footage to flagged events (both halves joined)."""
