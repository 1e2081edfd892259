-- Auction Flow's relational core: users sell and bid in auctions; a closed auction is paid.
CREATE TABLE IF NOT EXISTS users (
    id          bigserial PRIMARY KEY,
    username    text        NOT NULL UNIQUE,
    email       text        NOT NULL,
    avatar      bytea,
    balance     numeric(12,2) NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS auctions (
    id             bigserial PRIMARY KEY,
    seller_id      bigint      NOT NULL REFERENCES users(id),
    title          text        NOT NULL,
    description    text,
    starting_price numeric(12,2) NOT NULL,
    current_price  numeric(12,2) NOT NULL,
    status         text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'cancelled')),
    starts_at      timestamptz NOT NULL DEFAULT now(),
    ends_at        timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS bids (
    id          bigserial PRIMARY KEY,
    auction_id  bigint      NOT NULL REFERENCES auctions(id),
    bidder_id   bigint      NOT NULL REFERENCES users(id),
    amount      numeric(12,2) NOT NULL CHECK (amount > 0),
    placed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bids_auction_amount ON bids (auction_id, amount DESC);

CREATE TABLE IF NOT EXISTS payments (
    id          bigserial PRIMARY KEY,
    auction_id  bigint      NOT NULL UNIQUE REFERENCES auctions(id),
    payer_id    bigint      NOT NULL REFERENCES users(id),
    amount      numeric(12,2) NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'captured', 'refunded')),
    paid_at     timestamptz NOT NULL DEFAULT now()
);
