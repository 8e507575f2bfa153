"""The Slack surface: the Bolt app, its handlers, views, App Home and the Slack notifier."""
