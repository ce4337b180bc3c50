"""What the documents-API integration tests share: the experiments their stacks serve."""

EXPERIMENTS = """
scenes:
  text2text:
    layers:
      - name: recall
        salt: r-1
        arms:
          - {name: dense, traffic: 100}
          - name: words
            traffic: 0
            sources: [{name: words, kind: bm25, recall_top_k: 1000}]
    defaults: {embed_model: tiny, index: docs, recall_top_k: 100, top_k: 10}
"""
