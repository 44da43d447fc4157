"""The admin API (`/api/v5`, EMQX's paths and shapes) on the dashboard listener."""
