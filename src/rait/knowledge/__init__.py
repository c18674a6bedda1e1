"""What a model knows: answer scoring, certainty, probing and knowledge flow."""
