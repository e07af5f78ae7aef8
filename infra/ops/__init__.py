"""Operations: finding and resolving stuck bundles, with authentication and an audit trail."""
