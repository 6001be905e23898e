"""Arena: anonymous side-by-side battles, the durable vote store and the leaderboard."""
