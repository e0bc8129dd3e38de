-- One database per service: each service owns its store.
CREATE DATABASE inventory;
CREATE DATABASE warranty;
CREATE DATABASE theft;
CREATE DATABASE recalls;
