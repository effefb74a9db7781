"""tickloop's venue adapter on ccxt (`python3 -m tickloop_ccxt --exchange binance`) and a mock
Binance spot exchange for its tests (`python3 -m tickloop_ccxt.mock_binance`)."""
