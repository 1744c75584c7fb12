// app/db.server.ts for the test: an in-memory stand-in for the app's Prisma client, where
// handledWebhook.id is the primary key (a second create with the same id fails, as Prisma's
// unique constraint does).
const ids = new Set<string>();

export default {
  handledWebhook: {
    async create({ data }: { data: { id: string } }) {
      if (ids.has(data.id)) throw new Error("Unique constraint failed on the fields: (`id`)");
      ids.add(data.id);
      return data;
    },
  },
};
