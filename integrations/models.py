# Connections and sync runs arrive with the connector framework.
