"""Chat CLI, web app, map views and the offline demo pipeline (thin layers over clip/ and llava/)."""
