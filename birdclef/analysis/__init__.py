"""The study's analysis: EDA figures, clustering, embeddings, and the plots the W&B logger shares."""
