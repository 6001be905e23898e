"""Arena: anonymous side-by-side battles, the durable vote store and the leaderboard.

Modules (one concern each; import them directly, this package imports nothing heavy):
    arena.config        ArenaConfig.from_settings(settings)          the `arena` YAML section
    arena.records       BattleRecord, VoteRow, VoteRejected, RateLimit, VoteStore (protocol)
    arena.store_sql     SQLVoteStore: the store's rules, schema versions and migrations
      .store_sqlite     SQLiteVoteStore                              default backend (paths.votes)
      .store_postgres   PostgresVoteStore                            arena.vote_store: postgres
    arena.store         open_vote_store(settings) + the names above  the factory
    arena.sessions      salted HMAC session/client hashes, abuse_flags
    arena.battle        pick_pair, stream_battle, Arena               two models, same context
    arena.leaderboard   compute_leaderboard, write_plots              Bradley-Terry (weak prior) + Elo
    arena.export        export_votes                                  DPO pairs + KTO negatives
    arena.ui            build_arena_tab, build_leaderboard_tab        the two Gradio tabs
    python -m arena export | leaderboard
"""
